"""SRFlow's size rules on a parsed recipe: coupling steps on every level, an HR/LR ratio equal to the scale,
and HR sizes (crops, patch_size) that the flow's levels can halve."""
import math
from typing import Any, Dict, Optional, Tuple

from utils.errors import ConfigError
from utils.recipe_keys import recipe_rule


def flow_hr_multiple(levels: int, scale: int) -> int:
    """What the HR sides of an SRFlow with `levels` levels at `scale` must be multiples of: its flow halves them
    `levels` times, and the LR sides (HR / scale) must be whole."""
    return math.lcm(2 ** levels, scale)


@recipe_rule(order=30)  # after the scales are settled
def check_flows(opt: Dict[str, Any]) -> None:
    """SRFlow networks: coupling steps on every level, an HR/LR ratio equal to the scale, and HR sizes (crops,
    patch_size) that their levels can halve."""
    flows = [_check_flow(f"networks.{name}", net, opt["scale"]) for name, net in opt["networks"].items()]
    flows = [found for found in flows if found is not None]
    multiple = math.lcm(1, *(need for need, _ in flows))
    crops = [(f"datasets.{name}", ds) for name, ds in opt["datasets"].items()]
    crops += [(f"eval.evaluators.{name}.dataset", ev["dataset"]) for name, ev in opt["eval"]["evaluators"].items()
              if isinstance(ev.get("dataset"), dict)]
    for where, ds in crops:
        lr_side = ds.get("scale", opt["scale"]) * ds.get("force_multiple", 1)
        why = "; ".join([f"scale * force_multiple = {lr_side}"] + [reason for _, reason in flows])
        _check_multiple(ds.get("target_size"), math.lcm(multiple, lr_side), f"{where}.target_size", why)


def _check_flow(where: str, net: Dict[str, Any], default_scale: int) -> Optional[Tuple[int, str]]:
    """(what its HR sides must be multiples of, why) for an SRFlow network section, else None."""
    flow = net.get("flow")
    if net.get("which_model_G") != "srflow" or not isinstance(flow, dict) or flow.get("L") is None:
        return None  # not an SRFlow, or one that build_network refuses with its own message
    levels, steps = flow["L"], flow.get("K")
    for level in range(1, min(levels + 1, len(steps))) if isinstance(steps, list) else ():
        if steps[level] < 1:
            raise ConfigError(f"`{where}.flow.K[{level}]` must be >= 1 (the coupling steps of flow level {level}; "
                              f"index 0 is unused), got {steps[level]}")
    scale = net.get("scale") or default_scale
    flow_scale, stride = net.get("flow_scale") or scale, net.get("initial_stride", 1)
    if flow_scale != scale * stride:
        raise ConfigError(f"`{where}.flow_scale` / `{where}.initial_stride` ({flow_scale} / {stride}) is the "
                          f"network's HR/LR ratio and must equal the scale {scale}")
    need = flow_hr_multiple(levels, scale)
    reason = f"SRFlow `{where}` with flow.L {levels} at scale {scale} needs HR sides divisible by 2**{levels} " \
             f"and {scale}"
    _check_multiple(flow.get("patch_size"), need, f"{where}.flow.patch_size", reason)
    return need, reason


def _check_multiple(value: Optional[int], multiple: int, where: str, reason: str) -> None:
    if value is not None and value % multiple:
        lower, upper = value - value % multiple, value - value % multiple + multiple
        hint = f"{lower} or {upper}" if lower else str(upper)
        raise ConfigError(f"`{where}` is {value}; it must be a multiple of {multiple} ({reason}): e.g. {hint}")


