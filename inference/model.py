"""A trained generator from a recipe: options for inference, the device, and whose weights to load."""
import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from models import build_network, load_network_weights
from trainer.checkpoint import ema_name, find_resume_state, load_file
from utils.dist import pick_device  # noqa: F401  (inference's device rule is the trainer's)
from utils.errors import ConfigError
from utils.options import find_recipe, load_yaml, parse_options

Recipe = Union[str, Path, Dict[str, Any]]


def parse_inference_options(recipe: Recipe, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """parse_options for a run that trains nothing: `pretrain_rrdb` is dropped because the generator's own
    weights (RRDB included) replace it."""
    raw = copy.deepcopy(recipe) if isinstance(recipe, dict) else load_yaml(find_recipe(str(recipe)))
    implied = []
    for name, net in (raw.get("networks") or {}).items():
        if isinstance(net, dict) and net.get("pretrain_rrdb"):
            implied.append(f"networks.{name}.pretrain_rrdb=")
    return parse_options(recipe, implied + list(overrides))


def generator_name(opt: Dict[str, Any]) -> str:
    """`generator`, or the recipe's only network."""
    names = list(opt["networks"])
    if "generator" in names:
        return "generator"
    if len(names) == 1:
        return names[0]
    raise ConfigError(f"the recipe has no network named `generator` and several others ({', '.join(names)}); "
                      f"rename the one to use to `generator`")


def weights_path(opt: Dict[str, Any], name: str, checkpoint: Optional[str] = None) -> Path:
    """`checkpoint`, else `path.pretrain_model_<name>`, else the newest complete checkpoint of the
    recipe's experiment (its EMA weights when it kept them)."""
    if checkpoint:
        return Path(checkpoint)  # load_network_weights says what is wrong with it, if anything
    given = opt["path"].get(f"pretrain_model_{name}")
    if given:
        return Path(given)
    state_dir = Path(opt["path"]["training_state"])
    state = find_resume_state(state_dir)
    if state is None:
        raise ConfigError(f"no weights for network `{name}`: name a file (--set path.pretrain_model_{name}=FILE), "
                          f"or train experiment `{opt['name']}` first (no checkpoint in {state_dir})")
    files = load_file(state).get("model_files", {})
    return Path(opt["path"]["models"]) / files.get(ema_name(name), files[name])


def load_generator(opt: Dict[str, Any], checkpoint: Optional[str] = None,
                   device: Optional[torch.device] = None) -> Tuple[nn.Module, Path]:
    """The recipe's generator with trained weights, in eval mode on `device`; returns (net, weights file)."""
    name = generator_name(opt)
    net = build_network(opt["networks"][name], opt)
    path = weights_path(opt, name, checkpoint)
    load_network_weights(net, path, strict=opt["path"]["strict_load"])  # its errors name the file
    return net.eval().to(device or torch.device("cpu")), path
