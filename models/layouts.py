"""Which network a weights file holds, without a recipe.

A file this project wrote records its network's recipe section: that section is used as it is. Any other file
(official releases, DLAS's, older ones) goes to the recognisers: each network family registers one next to its
code, `@RECOGNISERS.register("<which_model_G>")`, a function that reads a state dict (official names already
converted) and returns (recipe section, description) for a network of its family, or None when the tensors are
not its family's. A proposal counts only when the network it builds has exactly the file's tensors and shapes,
so a recogniser may guess what the weights do not record (say, a scale) as long as the tensors decide the rest.
"""
from os import PathLike
from typing import Dict, NamedTuple, Optional, Union

import torch

from models.weights import StateDict, project_names, read_weights
from utils.errors import ConfigError
from utils.registry import Registry

RECOGNISERS = Registry("weights layout")


class Recognised(NamedTuple):
    section: dict  # a `networks.<name>` recipe section, `scale` included
    description: str  # for the user: what the file holds and how it was found


def recognise(path: Union[str, PathLike]) -> Recognised:
    """The network of a weights file; a ConfigError saying what the file holds when no family claims it."""
    sd, recorded = read_weights(path)
    if recorded is not None:
        problem = mismatch(recorded, project_names(sd)[0])
        if problem:
            raise ConfigError(f"weights file `{path}` records a network its tensors do not fit: {problem}")
        return Recognised(recorded, f"{recorded.get('which_model_G')} (the recipe section the file records)")
    sd = project_names(sd)[0]
    refused = []
    for family in RECOGNISERS.names():
        try:
            proposal = RECOGNISERS.get(family)(sd)
        except ConfigError as e:  # the family's tensors, but not a network buildable from them alone
            raise ConfigError(f"weights file `{path}`: {e}") from None
        if proposal is None:
            continue
        problem = mismatch(proposal[0], sd)
        if problem is None:
            return Recognised(*proposal)
        refused.append(f"not {family} ({problem})")
    tried = f"; {'; '.join(refused)}" if refused else ""
    raise ConfigError(f"weights file `{path}` holds no network this project recognises: {contents(sd)}{tried}. "
                      f"Known: {', '.join(RECOGNISERS.names())}; for another network use test.py -opt RECIPE")


def build_from_section(section: dict) -> torch.nn.Module:
    """The network a recipe section describes, as a recipe holding only it would build it."""
    from models import build_network  # models/__init__ imports the families, which import this module
    return build_network(section, {"scale": section.get("scale"), "networks": {"generator": section}})


def mismatch(section: dict, sd: StateDict) -> Optional[str]:
    """None when `section` builds a network with exactly the tensors of `sd`, else what differs."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation work
            own = build_from_section(section).state_dict()
    except (ConfigError, ValueError, TypeError) as e:
        return f"its recipe does not build: {e}"
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    for title, keys in (("missing", missing), ("unexpected", extra), ("other shapes", shapes)):
        if keys:
            return f"{len(keys)} tensor(s) {title}, e.g. {keys[0]}"
    return None


def contents(sd: StateDict) -> str:
    """'N tensors under a (12), b (3)': the top-level names, for a file nobody recognised."""
    if not sd:
        return "no tensors"
    tops: Dict[str, int] = {}
    for key in sd:
        tops[key.split(".")[0]] = tops.get(key.split(".")[0], 0) + 1
    names = sorted(tops, key=lambda t: -tops[t])
    more = f", ... ({len(names)} names)" if len(names) > 6 else ""
    return f"{len(sd)} tensors under {', '.join(f'{t} ({tops[t]})' for t in names[:6])}{more}"


def block_count(sd: StateDict, prefix: str) -> int:
    """How many numbered children `prefix.0`, `prefix.1`, ... the tensors name."""
    found = {int(k[len(prefix) + 1:].split(".")[0]) for k in sd
             if k.startswith(prefix + ".") and k[len(prefix) + 1:].split(".")[0].isdigit()}
    return max(found) + 1 if found else 0
