"""Reading a recipe's network section into a network's config dataclass, which alone holds the defaults."""
from typing import Any, Optional, Sequence


def given(**values: Any) -> dict:
    """The values a recipe gives. None counts as absent, as in the official code's `opt_get`, so that the
    config dataclass's default applies (a parsed recipe holds None for an absent key the schema leaves open)."""
    return {key: value for key, value in values.items() if value is not None}


def lookup(section: Optional[dict], path: Sequence[str]) -> Any:
    """section[path[0]][path[1]]..., or None where a level is absent or not a section."""
    for key in path:
        section = section.get(key) if isinstance(section, dict) else None
    return section


def recorded_section(opt: dict, name: str) -> dict:
    """`networks.<name>` as a weights file records it: enough to build the network from the file alone (the
    recipe's `scale` filled in where the section leaves it to the recipe), without `pretrain_rrdb`, whose
    weights the file's replace."""
    section = {key: value for key, value in opt["networks"][name].items() if key != "pretrain_rrdb"}
    if section.get("scale") is None and opt.get("scale") is not None:
        section["scale"] = opt["scale"]
    return section
