"""Reading checkpoints and loading them into networks, with official ESRGAN/SRFlow name conversion."""
import logging
import re
from os import PathLike
from typing import Dict, List, NamedTuple, Tuple, Union

import torch
from torch import nn

from utils.errors import ConfigError

log = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]
WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model")
# Official name component -> this project's (DLAS/BasicSR) name component.
OFFICIAL_NAMES = {"RRDB_trunk": "body", "RDB1": "rdb1", "RDB2": "rdb2", "RDB3": "rdb3",
                  "trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2",
                  "upconv3": "conv_up3", "HRconv": "conv_hr"}
# The official FlowUpsamplerNet builds a conv `f` that no forward pass uses; DLAS copied it.
UNUSED_KEY = re.compile(r"^flowUpsamplerNet\.f\.0\.(weight|bias)$")


class LoadResult(NamedTuple):
    missing_keys: List[str]
    unexpected_keys: List[str]
    mismatched_keys: List[str]  # "name: checkpoint shape vs network shape"
    dropped_keys: List[str]  # unused official keys removed before loading
    converted: bool  # official names were detected and converted


def read_state_dict(path_or_state_dict: Union[str, PathLike, dict]) -> StateDict:
    """A bare state dict from a file or dict: unwraps {'params': ...} etc. and strips DDP's 'module.'."""
    sd = path_or_state_dict
    if not isinstance(sd, dict):
        sd = torch.load(sd, map_location="cpu", weights_only=True)
    for key in WRAPPER_KEYS:
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def is_official(sd: StateDict) -> bool:
    return any(part in OFFICIAL_NAMES for k in sd for part in k.split("."))


def convert_official(sd: StateDict) -> Tuple[StateDict, List[str]]:
    """Official ESRGAN/SRFlow names -> this project's; returns (converted, dropped unused keys)."""
    dropped = [k for k in sd if UNUSED_KEY.match(k)]
    out = {".".join(OFFICIAL_NAMES.get(p, p) for p in k.split(".")): v
           for k, v in sd.items() if not UNUSED_KEY.match(k)}
    return out, dropped


def _summary(title: str, keys: List[str], first: int = 5) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > first else ""
    return f"{title} ({len(keys)}): {', '.join(keys[:first])}{more}"


def load_network_weights(net: nn.Module, path_or_state_dict: Union[str, PathLike, dict],
                         strict: bool = True) -> LoadResult:
    """Load a checkpoint into `net`, converting official names; a strict mismatch is a ConfigError."""
    where = path_or_state_dict if isinstance(path_or_state_dict, (str, PathLike)) else "state dict"
    sd = read_state_dict(path_or_state_dict)
    converted = is_official(sd)
    dropped = [k for k in sd if UNUSED_KEY.match(k)]
    if converted:
        sd, dropped = convert_official(sd)
    else:
        sd = {k: v for k, v in sd.items() if k not in dropped}
    if dropped:
        log.info("dropped %d unused official key(s): %s", len(dropped), ", ".join(dropped))

    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or mismatched):
        parts = [_summary(t, ks) for t, ks in (("missing keys", missing), ("unexpected keys", unexpected),
                                               ("shape mismatches", mismatched)) if ks]
        raise ConfigError(f"checkpoint {where} does not fit the network: " + "; ".join(parts))
    loadable = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    net.load_state_dict(loadable, strict=strict)
    return LoadResult(missing, unexpected, mismatched, dropped, converted)
