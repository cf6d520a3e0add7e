"""Checkpoint files: atomic writes, finding the newest complete state, loading with weights_only.

A checkpoint at iteration N is `models/N_<network>.pth` (plain state dicts, loadable on their own, that record
their network's recipe section; `.safetensors` with `logger.weights_format: safetensors`; a network's moving
average, when the run keeps one, is `models/N_<network>_ema.pth`) plus `training_state/N.state` (a
TrainingState). The state file is written last, so its presence marks a complete checkpoint.
"""
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from models.weights import save_weights
from trainer.training_state import TrainingState
from utils.errors import ConfigError
from utils.files import atomic_path


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file in the same folder, fsynced, then renamed over `path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_file(path: Path) -> Any:
    """torch.load with weights_only; a missing, truncated or foreign file is a one-line ConfigError."""
    if Path(path).is_dir():
        raise ConfigError(f"checkpoint `{path}` is a folder, not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint file `{path}` does not exist") from None
    except Exception as e:  # a truncated or foreign file: say which one, in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"cannot read checkpoint `{path}` (truncated, or not a PyTorch checkpoint): {first}") from None


WEIGHTS_FORMATS = ("pth", "safetensors")  # `logger.weights_format`: the file type of checkpoints' weights
EMA_SUFFIX = "_ema"


def ema_name(network: str) -> str:
    """The name a network's moving average is saved under, among the checkpoint's weights."""
    return network + EMA_SUFFIX


def network_of(name: str) -> str:
    """The network whose weights a checkpoint saves under `name` (itself, or its moving average)."""
    return name.removesuffix(EMA_SUFFIX)


def weights_file(it: int, name: str, weights_format: str = WEIGHTS_FORMATS[0]) -> str:
    """The file (under models/) of the weights `name` (a network, or its ema_name) at iteration `it`."""
    return f"{it}_{name}.{weights_format}"


def final_weights(models: Path, it: int, network: str, weights_format: str = WEIGHTS_FORMATS[0]) -> Path:
    """The weights of `network` at iteration `it`: their moving average when the run kept one."""
    ema = models / weights_file(it, ema_name(network), weights_format)
    return ema if ema.is_file() else models / weights_file(it, network, weights_format)


def save_checkpoint(exp: Dict[str, str], it: int, networks: Dict[str, Dict[str, torch.Tensor]],
                    state: TrainingState, lineage: List[Dict[str, Any]], keep: int = 0,
                    recipes: Optional[Dict[str, dict]] = None,
                    weights_format: str = WEIGHTS_FORMATS[0]) -> Path:
    """Write checkpoint `it` (weights first, the state file last) and record it in `lineage`, the run's own
    checkpoints, which is saved inside the state. Each weights file records its network's recipe section from
    `recipes` (by the same name). With `keep` > 0, the run's older checkpoints beyond the newest `keep` are
    deleted; files the run did not write are never touched.

    If a write fails (a full or read-only disk), the files of this incomplete checkpoint are removed and
    the OSError is raised: the earlier checkpoints stay as they were.
    """
    written: List[Path] = []
    model_files = {name: weights_file(it, name, weights_format) for name in networks}
    path = Path(exp["training_state"]) / f"{it}.state"
    entry = {"iter": it, "files": [str(Path("models") / f) for f in model_files.values()]
             + [str(Path("training_state") / path.name)]}
    history = [e for e in lineage if e["iter"] != it] + [entry]
    try:
        for name, weights in networks.items():
            written.append(Path(exp["models"]) / model_files[name])
            with atomic_path(written[-1]) as tmp:
                save_weights(weights, tmp, (recipes or {}).get(name))
        written.append(path)
        state.iteration, state.model_files, state.lineage = it, model_files, history
        atomic_save(state.to_dict(), path)
    except OSError:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    lineage[:] = history
    if keep > 0:
        prune(Path(exp["experiments_root"]), lineage, keep)
    return path


def prune(root: Path, lineage: List[Dict[str, Any]], keep: int) -> None:
    """Delete the files of the run's own checkpoints beyond the newest `keep` (state file first, so that an
    interrupted prune never leaves a state whose weights are gone)."""
    ordered = sorted(lineage, key=lambda e: e["iter"])
    for entry in ordered[:-keep]:
        for rel in sorted(entry["files"], key=lambda f: not f.endswith(".state")):
            (root / rel).unlink(missing_ok=True)
        lineage.remove(entry)


def complete_states(training_state_dir: Path) -> List[Path]:
    """State files sorted newest first."""
    found = []
    for p in Path(training_state_dir).glob("*.state"):
        if re.fullmatch(r"\d+", p.stem):
            found.append((int(p.stem), p))
    return [p for _, p in sorted(found, reverse=True)]


def find_resume_state(training_state_dir: Path) -> Optional[Path]:
    """The newest state whose model files are all present and which reads back."""
    for path in complete_states(training_state_dir):
        try:
            state = load_file(path)
        except ConfigError:
            continue
        models = Path(training_state_dir).parent / "models"
        if isinstance(state, dict) and all((models / f).is_file() for f in state.get("model_files", {}).values()):
            return path
    return None


def load_training_state(path: Path) -> TrainingState:
    """A training state that `--resume` can continue from, with its weight files present."""
    if path.suffix in (".pth", ".safetensors"):
        raise ConfigError(f"`{path}` is a weights file; --resume takes a training state "
                          "(training_state/<iter>.state of the run) or `auto`. To start from these weights, "
                          "use --set path.pretrain_model_<network>=FILE")
    state = load_file(path)
    try:
        state = TrainingState.from_dict(state)
    except (TypeError, KeyError, AttributeError):  # not a dict, or not the keys a TrainingState has
        raise ConfigError(f"`{path}` is not a training state (training_state/<iter>.state of a run)") from None
    models = path.parent.parent / "models"
    for name, file in state.model_files.items():
        if not (models / file).is_file():
            raise ConfigError(f"training state `{path}` needs the weights of `{name}` at {models / file}, which "
                              "is missing; resume from another state (or --resume auto: the newest complete one)")
    return state


def files_newer_than(root: Path, it: int) -> List[Path]:
    """Checkpoint files in `root` (models/, training_state/) of iterations after `it`."""
    found = []
    for folder, pattern in (("models", r"(\d+)_.+\.(pth|safetensors)"), ("training_state", r"(\d+)\.state")):
        for p in (root / folder).glob("*"):
            m = re.fullmatch(pattern, p.name)
            if m and int(m.group(1)) > it:
                found.append(p)
    return sorted(found)


def first_nonfinite(obj: Any, where: str = "") -> Optional[str]:
    """The key path of the first floating-point tensor in `obj` (nested dicts/lists) holding inf or NaN."""
    if torch.is_tensor(obj):
        return where if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = first_nonfinite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
