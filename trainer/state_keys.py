"""The names in a training iteration's `state` (docs: "How data flows"): the dataset writes its item keys,
each injector writes its `out:` names. A recipe that names a state key must name one that something writes,
and no injector may write over what the dataset wrote (`out: hq` would make the loss compare the output
with itself: 0, and nothing learned)."""
from typing import Any, Dict, List

from data import ITEM_KEYS
from utils.errors import ConfigError, closest
from utils.options import as_list


def injector_outputs(opt: Dict[str, Any]) -> Dict[str, str]:
    """{state key: the recipe key of the injector that writes it}."""
    outs: Dict[str, str] = {}
    for step_name, step in opt["steps"].items():
        for inj_name, inj in step["injectors"].items():
            for out in as_list(inj.get("out")):
                if out is not None:
                    outs.setdefault(str(out), f"steps.{step_name}.injectors.{inj_name}.out")
    return outs


def check_state_keys(opt: Dict[str, Any]) -> None:
    """Refuse, naming the key, an injector output that writes over a dataset key, and a `logger.visuals`
    name that nothing writes."""
    outs = injector_outputs(opt)
    for key, where in outs.items():
        if key in ITEM_KEYS:
            raise ConfigError(f"`{where}` writes `{key}`, which the dataset writes ({', '.join(ITEM_KEYS)}): the "
                              "injector would replace the data its losses compare with; give its output another name")
    known: List[str] = [*ITEM_KEYS, *outs]
    for i, name in enumerate(opt["logger"]["visuals"]):
        if name not in known:
            raise ConfigError(f"`logger.visuals[{i}]` is `{name}`, which neither the dataset nor an injector "
                              f"writes{closest(name, known)}; known: {', '.join(known)}")
