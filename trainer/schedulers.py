"""Learning-rate schedules as pure functions of the iteration, so resuming needs no scheduler state."""
import math
from typing import Any, Callable, Dict

from utils.registry import Registry

SCHEDULERS = Registry("lr scheme")


@SCHEDULERS.register("MultiStepLR")
def multi_step(opt_train: Dict[str, Any]) -> Callable[[int], float]:
    steps, gamma = sorted(opt_train.get("gen_lr_steps") or []), opt_train.get("lr_gamma", 0.5)
    return lambda it: gamma ** sum(it >= s for s in steps)


@SCHEDULERS.register("CosineAnnealingLR")
def cosine(opt_train: Dict[str, Any]) -> Callable[[int], float]:
    total, floor = opt_train["niter"], opt_train.get("lr_gamma", 0.0)
    return lambda it: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))


@SCHEDULERS.register("constant")
def constant(opt_train: Dict[str, Any]) -> Callable[[int], float]:
    return lambda it: 1.0


def build_lr_factor(opt_train: Dict[str, Any]) -> Callable[[int], float]:
    """Multiplier of the base lr at iteration `it` (1-based), including the linear `warmup_iter` ramp."""
    schedule = SCHEDULERS.get(opt_train["default_lr_scheme"], "train.default_lr_scheme")(opt_train)
    warmup = opt_train.get("warmup_iter", -1)
    if warmup <= 0:
        return schedule
    return lambda it: schedule(it) * min(1.0, it / warmup)
