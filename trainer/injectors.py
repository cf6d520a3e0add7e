"""Injectors: read keys from the step's `state`, call something (usually a network), write new keys."""
from typing import Any, Dict, List

import torch

from trainer.context import RunContext
from utils.dist import unwrap
from utils.errors import ConfigError
from utils.options import as_list
from utils.recipe_keys import ANY, REQUIRED, STR_OR_LIST, TEXT, Key
from utils.registry import Registry

INJECTORS = Registry("injector")

# When an injector, a loss or a step runs (DLAS's keys): every `every` iterations from `after` on, until `before`.
SCHEDULE_KEYS = {
    "every": Key(int, 1, "runs every this many iterations", at_least=1),
    "after": Key(int, 0, "from this iteration on", at_least=0),
    "before": Key(int, -1, "until this iteration (-1: never stops)", at_least=-1),
}
INJECTOR_KEYS = {  # of every injector
    "type": Key(str, REQUIRED, "the injector (see below)"),
    "in": Key(ANY, None, "state key(s) (or None, a number, a boolean) passed as positional arguments"),
    "out": Key(STR_OR_LIST, None, "state key(s) the outputs are written to", items=TEXT),
    **SCHEDULE_KEYS,
}


def active(opt: Dict[str, Any], it: int) -> bool:
    """DLAS's scheduling keys shared by injectors and losses: `every`, `after`, `before`."""
    before = opt["before"]
    return it % opt["every"] == 0 and it >= opt["after"] and (before < 0 or it < before)


class Injector:
    def __init__(self, name: str, opt: Dict[str, Any], env: RunContext):
        self.name, self.opt, self.env = name, opt, env
        # Set by the step when no loss depends on this injector's outputs (e.g. samples for visuals):
        # it then runs without building a graph, and outside DistributedDataParallel.
        self.feeds_loss = True

    def lookup(self, key: Any, state: Dict[str, Any]) -> Any:
        """DLAS's argument rule: the string 'None' is None, another string is a state key, anything else
        (a number, a boolean) is passed as is."""
        if isinstance(key, (list, tuple)):
            return [self.lookup(k, state) for k in key]
        if not isinstance(key, str):
            return key
        if key == "None":
            return None
        if key not in state:
            raise ConfigError(f"injector `{self.name}` reads `{key}`, which is not in the state at this point; "
                              f"available: {', '.join(sorted(state))}")
        return state[key]

    def __call__(self, state: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError


@INJECTORS.register("generator", keys={
    "generator": Key(str, REQUIRED, "the network to call", names=("networks", "network")),
    "grad": Key(bool, True, "false: run without gradients"),
    "method": Key(str, None, "call this method of the network instead of forward"),
    "args": Key(dict, {}, "keyword arguments added to the call"),
    "fp16": Key(bool, True, "accepted for DLAS's recipes; mixed precision is the top-level `fp16`"),
})
class GeneratorInjector(Injector):
    """Calls network `generator` with positional arguments from `in:` and names its outputs by `out:`."""

    def __call__(self, state: Dict[str, Any]) -> Dict[str, Any]:
        net = self.env.networks[self.opt["generator"]]
        if self.opt.get("method") or not self.feeds_loss:
            net = unwrap(net)  # DDP only around what a loss back-propagates through
        method = getattr(net, self.opt["method"]) if self.opt.get("method") else net
        args = as_list(self.lookup(self.opt["in"], state))
        if self.opt["grad"] and self.feeds_loss:
            results = method(*args, **self.opt["args"])
        else:
            with torch.no_grad():
                results = method(*args, **self.opt["args"])
        if not isinstance(self.opt["out"], list):
            return {self.opt["out"]: results}
        if not isinstance(results, (list, tuple)) or len(results) < len(self.opt["out"]):
            got = len(results) if isinstance(results, (list, tuple)) else 1
            raise ConfigError(f"injector `{self.name}` names {len(self.opt['out'])} outputs {self.opt['out']} "
                              f"but the network returned {got}; use a single name without brackets")
        return dict(zip(self.opt["out"], results))


def build_injectors(opt_injectors: Dict[str, Dict[str, Any]], env: RunContext, where: str) -> List[Injector]:
    return [INJECTORS.get(o["type"], f"{where}.{name}.type")(name, o, env) for name, o in opt_injectors.items()]


# Imported after INJECTORS exists: these modules register themselves (and their recipe keys).
from trainer import image_patch  # noqa: E402,F401
