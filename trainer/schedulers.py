"""Learning-rate schedules as pure functions (iteration, base lr) -> lr, so that resuming needs no scheduler
state and a schedule changed on resume takes effect at once.

The iteration is 1-based and the lr is the one used by that iteration, as DLAS and the official SRFlow code
step their schedulers before each optimisation step: a milestone s lowers the lr from iteration s on.
"""
import bisect
import math
from typing import Any, Callable, Dict, List, Tuple

from utils.errors import ConfigError
from utils.recipe_keys import COUNT, NUM, Key, declare_section
from utils.registry import Registry

Schedule = Callable[[int, float], float]
SCHEDULERS = Registry("lr scheme")

# `train` keys the schemes read (each scheme registers those it reads).
RESTARTS = {
    "restarts": Key(list, [], "iterations at which the lr jumps back up", items=COUNT),
    "restart_weights": Key(list, [], "to this times the base lr, one per restart", items=Key(NUM, at_least=0)),
}
ETA_MIN = Key(NUM, 0, "the lowest lr of a cosine", at_least=0)


def milestones(opt_train: Dict[str, Any]) -> List[int]:
    """`lr_steps_rel` (fractions of niter, as the official SRFlow configs give them) when given, else
    `gen_lr_steps` (iterations)."""
    if opt_train.get("lr_steps_rel") is not None:
        return sorted(int(f * opt_train["niter"]) for f in opt_train["lr_steps_rel"])
    return sorted(opt_train["gen_lr_steps"])


def restarts(opt_train: Dict[str, Any]) -> List[Tuple[int, float]]:
    """(iteration, weight) pairs, sorted: at `restarts[i]` the lr jumps back to `restart_weights[i]` x base."""
    its, weights = opt_train["restarts"], opt_train["restart_weights"]
    if len(its) != len(weights):
        raise ConfigError(f"train.restarts ({len(its)} values) and train.restart_weights ({len(weights)}) "
                          "must have the same length")
    return sorted(zip(its, map(float, weights)))


def segment(it: int, points: List[Tuple[int, float]]) -> Tuple[int, float, int]:
    """(start, weight, index) of the restart segment `it` lies in; segment 0 starts at 0 with weight 1."""
    i = bisect.bisect_right([p for p, _ in points], it)
    return (0, 1.0, 0) if i == 0 else (points[i - 1][0], points[i - 1][1], i)


@SCHEDULERS.register("MultiStepLR", keys={
    "gen_lr_steps": Key(list, [], "iterations at which the lr is multiplied by `lr_gamma`", items=COUNT),
    "lr_steps_rel": Key(list, None, "the same as fractions of `niter` (the official SRFlow configs); wins",
                        items=Key(NUM, at_least=0)),
    "lr_gamma": Key(NUM, 0.5, "factor applied at each of those", at_least=0),
    **RESTARTS})
def multi_step(opt_train: Dict[str, Any]) -> Schedule:
    steps, gamma, points = milestones(opt_train), opt_train["lr_gamma"], restarts(opt_train)

    def lr(it: int, base: float) -> float:
        start, weight, _ = segment(it, points)
        return base * weight * gamma ** sum(start < s <= it for s in steps)
    return lr


@SCHEDULERS.register("CosineAnnealingLR", keys={"eta_min": ETA_MIN})
def cosine(opt_train: Dict[str, Any]) -> Schedule:
    """From the base lr at iteration 0 down to `eta_min` at `niter`."""
    total, floor = opt_train["niter"], opt_train["eta_min"]
    return lambda it, base: floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))


@SCHEDULERS.register("CosineAnnealingLR_Restart", keys={
    "T_period": Key(list, None, "iterations of each cosine segment", items=Key(int, at_least=1)),
    "eta_min": ETA_MIN, **RESTARTS})
def cosine_restart(opt_train: Dict[str, Any]) -> Schedule:
    """The official SRFlow/BasicSR scheme: segment i (split by `restarts`) falls along a half cosine of
    `T_period[i]` iterations from `restart_weights` x base to `eta_min`."""
    periods, floor, points = opt_train.get("T_period"), opt_train["eta_min"], restarts(opt_train)
    if not periods or len(periods) < len(points) + 1:
        raise ConfigError("train.T_period needs one period per segment of CosineAnnealingLR_Restart "
                          f"({len(points) + 1}: one more than train.restarts), got {periods}")

    def lr(it: int, base: float) -> float:
        start, weight, i = segment(it, points)
        return floor + (base * weight - floor) * 0.5 * (1 + math.cos(math.pi * (it - start) / periods[i]))
    return lr


@SCHEDULERS.register("constant")
def constant(opt_train: Dict[str, Any]) -> Schedule:
    return lambda it, base: base


declare_section("train", {
    "default_lr_scheme": Key(str, "MultiStepLR", "the lr schedule: " + ", ".join(SCHEDULERS.names())),
    "warmup_iter": Key(int, -1, "the lr ramps up linearly over this many iterations (-1: none)", at_least=-1),
    **{key: spec for name in SCHEDULERS.names() for key, spec in SCHEDULERS.keys_of(name).items()},
})


def build_lr_schedule(opt_train: Dict[str, Any]) -> Schedule:
    """The recipe's schedule, with the linear `warmup_iter` ramp in front."""
    schedule = SCHEDULERS.get(opt_train["default_lr_scheme"], "train.default_lr_scheme")(opt_train)
    warmup = opt_train["warmup_iter"]
    if warmup <= 0:
        return schedule
    return lambda it, base: schedule(it, base) * min(1.0, it / warmup)
