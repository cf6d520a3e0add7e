"""Checkpoint files: atomic writes, finding the newest complete state, loading with weights_only.

A checkpoint at iteration N is `models/N_<network>.pth` (plain state dicts, loadable on their own) plus
`training_state/N.state`. The state file is written last, so its presence marks a complete checkpoint.
"""
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from utils.errors import ConfigError


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint file `{path}` does not exist") from None
    except Exception as e:  # a truncated or foreign file: say which one
        raise ConfigError(f"cannot read checkpoint `{path}`: {e}") from None


def save_checkpoint(exp: Dict[str, str], it: int, networks: Dict[str, Dict[str, torch.Tensor]],
                    state: Dict[str, Any], keep: int = 0) -> Path:
    model_files = {}
    for name, weights in networks.items():
        model_files[name] = f"{it}_{name}.pth"
        atomic_save(weights, Path(exp["models"]) / model_files[name])
    state = {**state, "iter": it, "model_files": model_files}
    path = Path(exp["training_state"]) / f"{it}.state"
    atomic_save(state, path)
    if keep > 0:
        prune(exp, keep)
    return path


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
        if all((models / f).is_file() for f in state.get("model_files", {}).values()):
            return path
    return None


def prune(exp: Dict[str, str], keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for path in complete_states(Path(exp["training_state"]))[keep:]:
        for f in Path(exp["models"]).glob(f"{path.stem}_*.pth"):
            f.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


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
