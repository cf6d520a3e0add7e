"""Reading and writing weights files (.pth, .safetensors) and loading them into networks, with official
ESRGAN/SRFlow name conversion.

A weights file this project writes records its network's recipe section (JSON), so that the network can be
rebuilt from the file alone: in a .pth, as an entry of the state dict's `_metadata` (PyTorch's per-module
metadata, which `load_state_dict` reads by module name and DLAS-style loaders drop), so the file's keys stay
exactly the network's and it loads strictly anywhere; in a .safetensors, as its `network` metadata entry.
"""
import json
import logging
import struct
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict
from os import PathLike
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from utils.errors import ConfigError

log = logging.getLogger("srflow.weights")  # a child of the run's logger: its console and log file

StateDict = Dict[str, torch.Tensor]
WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model")
# Official name component -> this project's (DLAS/BasicSR) name component.
OFFICIAL_NAMES = {"RRDB_trunk": "body", "RDB1": "rdb1", "RDB2": "rdb2", "RDB3": "rdb3",
                  "trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2",
                  "upconv3": "conv_up3", "HRconv": "conv_hr"}
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # pickled magic number of torch's pre-1.6 format
# The official FlowUpsamplerNet builds a conv `f` that no forward pass uses; DLAS copied it.
UNUSED_KEY = re.compile(r"^flowUpsamplerNet\.f\.0\.(weight|bias)$")
RECIPE_ENTRY = "srflow-trainer:network"  # a .pth's `_metadata` entry; no module can have this name
SAFETENSORS_ENTRY = "network"  # a .safetensors metadata entry (str -> str)
WEIGHTS_SUFFIXES = (".pth", ".safetensors")


class LoadResult(NamedTuple):
    missing_keys: List[str]
    unexpected_keys: List[str]
    mismatched_keys: List[str]  # "name: checkpoint shape vs network shape"
    dropped_keys: List[str]  # unused official keys removed before loading
    converted: bool  # official names were detected and converted
    loaded: int = 0  # tensors copied into the network


def is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte header length, then the JSON header."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(10)
    return len(head) == 10 and head[8:10] == b'{"' and 0 < struct.unpack("<Q", head[:8])[0] < path.stat().st_size


def load_safetensors(path: Path) -> Dict[str, Any]:
    """A .safetensors file's tensors; its recorded recipe section (if any) in the dict's `_metadata` as a .pth
    carries it. Nothing in the format can run code."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise ConfigError(f"reading `{path}` needs the safetensors package: pip install -r requirements.txt") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            sd = OrderedDict((k, f.get_tensor(k)) for k in f.keys())
            recorded = (f.metadata() or {}).get(SAFETENSORS_ENTRY)
    except Exception as e:  # safetensors' errors name the format's internals: say what the file is
        raise ConfigError(f"weights file `{path}` is not a readable safetensors file (truncated?): {e}") from None
    if recorded:
        sd._metadata = OrderedDict({RECIPE_ENTRY: {"json": recorded}})
    return sd


def load_weights_file(path: Union[str, PathLike]) -> Any:
    """torch.load(path, weights_only=True), or the tensors of a .safetensors file; a file that cannot be read is
    a one-line ConfigError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"weights `{path}` is a folder; expected a weights file (.pth, .safetensors) in it "
                          f"or elsewhere")
    if not path.is_file():
        raise ConfigError(f"weights file `{path}` does not exist")
    if is_safetensors(path):
        return load_safetensors(path)
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's message is long and generic: say what the file is instead
        raise ConfigError(f"weights file `{path}` {_what_is_wrong(path, e)}") from None


def _what_is_wrong(path: Path, error: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "is empty (an interrupted copy or download?): copy it again"
    if head.startswith(b"version https://git-lfs"):
        return "is a Git LFS pointer, not the weights: fetch them with `git lfs pull`"
    is_pickle, is_zip = head.startswith(b"\x80"), head.startswith(b"PK")  # torch's legacy and zip formats
    if isinstance(error, EOFError) or "unexpected EOF" in str(error) or (is_zip and not zipfile.is_zipfile(path)) \
            or (head.startswith(LEGACY_MAGIC) and _legacy_pickles_cut(path)):
        return "is truncated (an interrupted copy or download?): copy it again"
    if (is_pickle or is_zip) and "Weights only load failed" in str(error):
        return ("holds Python objects besides tensors, which are never unpickled here (a whole pickled model or "
                "a foreign file?): load it where it was made and save its state_dict() instead")
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "is a text file, not PyTorch weights"
    return f"is not a PyTorch weights file ({type(error).__name__})"


def _legacy_pickles_cut(path: Path) -> bool:
    """Whether a legacy-format torch file ends inside the pickles it starts with (magic number, protocol,
    system info, the object, its storage keys), read as opcodes only: nothing is unpickled."""
    with open(path, "rb") as f:
        try:
            for _ in range(5):
                for _ in pickletools.genops(f):
                    pass
        except ValueError:  # "pickle exhausted before seeing STOP" and the like
            return True
    return False


def read_state_dict(path_or_state_dict: Union[str, PathLike, dict]) -> StateDict:
    """A bare state dict from a file or dict: unwraps {'params': ...} etc. and strips DDP's 'module.'.
    Anything else (a list, a training state with its counters) is a ConfigError."""
    return read_weights(path_or_state_dict)[0]


def read_weights(path_or_state_dict: Union[str, PathLike, dict]) -> Tuple[StateDict, Optional[dict]]:
    """read_state_dict's state dict, and the network recipe section the file records (None if none)."""
    sd = path_or_state_dict
    where = f"weights file `{sd}`" if not isinstance(sd, dict) else "the state dict"
    if not isinstance(sd, dict):
        sd = load_weights_file(sd)
    for key in WRAPPER_KEYS:
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise ConfigError(f"{where} holds a {type(sd).__name__}, not a state dict (tensor names -> tensors)")
    others = [str(k) for k, v in sd.items() if not torch.is_tensor(v)]
    if others:
        raise ConfigError(f"{where} is not a network's weights: {_summary('values that are not tensors', others)}"
                          f" (a training state? its network weights are the models/<iter>_<network>.pth files)")
    recorded = recorded_network(sd, where)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd), recorded


def recorded_network(sd: dict, where: str) -> Optional[dict]:
    """The recipe section a state dict's `_metadata` records, or None."""
    entry = (getattr(sd, "_metadata", None) or {}).get(RECIPE_ENTRY)
    if not isinstance(entry, dict) or not isinstance(entry.get("json"), str):
        return None
    try:
        section = json.loads(entry["json"])
    except ValueError:
        section = None
    if not isinstance(section, dict):
        raise ConfigError(f"{where} records a network recipe that is not a JSON mapping: {entry['json'][:80]!r}")
    return section


def save_weights(sd: StateDict, path: Path, network: Optional[dict] = None) -> None:
    """Write `sd` to `path` as the suffix says (.safetensors, else torch.save), recording `network`, the
    network's recipe section, when given. Not atomic by itself: write to a temporary path (utils/files.py)."""
    text = None if network is None else json.dumps(network, sort_keys=True)
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path),
                  metadata=None if text is None else {SAFETENSORS_ENTRY: text})
        return
    # plain contiguous tensors, whatever layout the network computes in (models/memory_format.py)
    out = OrderedDict((k, v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in sd.items())
    out._metadata = OrderedDict(getattr(sd, "_metadata", None) or {})  # PyTorch's per-module versions
    if text is not None:
        out._metadata[RECIPE_ENTRY] = {"json": text}
    torch.save(out, path)


def is_official(sd: StateDict) -> bool:
    return any(part in OFFICIAL_NAMES for k in sd for part in k.split("."))


def convert_official(sd: StateDict) -> Tuple[StateDict, List[str]]:
    """Official ESRGAN/SRFlow names -> this project's; returns (converted, dropped unused keys)."""
    dropped = [k for k in sd if UNUSED_KEY.match(k)]
    out = {".".join(OFFICIAL_NAMES.get(p, p) for p in k.split(".")): v
           for k, v in sd.items() if not UNUSED_KEY.match(k)}
    return out, dropped


def project_names(sd: StateDict) -> Tuple[StateDict, List[str], bool]:
    """(sd with official names converted and the unused official keys left out, those keys, whether it
    converted)."""
    if is_official(sd):
        return (*convert_official(sd), True)
    dropped = [k for k in sd if UNUSED_KEY.match(k)]
    return {k: v for k, v in sd.items() if k not in dropped}, dropped, False


def _summary(title: str, keys: List[str], first: int = 5) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > first else ""
    return f"{title} ({len(keys)}): {', '.join(keys[:first])}{more}"


def load_network_weights(net: nn.Module, path_or_state_dict: Union[str, PathLike, dict],
                         strict: bool = True) -> LoadResult:
    """Load a checkpoint into `net`, converting official names. A strict mismatch is a ConfigError; a non-strict
    load logs what it loaded, skipped for shape, missed and did not use, and loading nothing is a ConfigError."""
    where = f"`{path_or_state_dict}`" if isinstance(path_or_state_dict, (str, PathLike)) else "state dict"
    sd, dropped, converted = project_names(read_state_dict(path_or_state_dict))
    if dropped:
        log.info("dropped %d unused official key(s): %s", len(dropped), ", ".join(dropped))

    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    loadable = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    problems = "; ".join(_summary(t, ks) for t, ks in (("skipped for shape", mismatched), ("missing keys", missing),
                                                        ("unexpected keys", unexpected)) if ks)
    if strict and problems:
        raise ConfigError(f"checkpoint {where} does not fit the network: {problems}")
    if own and not loadable:  # even a non-strict load must load something
        raise ConfigError(f"checkpoint {where} fits none of the network's {len(own)} tensors ({problems}): "
                          f"are these another network's weights?")
    net.load_state_dict(loadable, strict=strict)
    if not strict:
        (log.warning if problems else log.info)(
            f"non-strict load (strict_load: false) of {where}: loaded {len(loadable)} of the network's {len(own)} "
            f"tensors, skipped for shape {len(mismatched)}, missing {len(missing)}, unexpected {len(unexpected)}"
            + (f"; {problems}" if problems else ""))
    return LoadResult(missing, unexpected, mismatched, dropped, converted, len(loadable))
