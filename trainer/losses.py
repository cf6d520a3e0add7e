"""Losses: each reads the step's `state` and returns a scalar; the step sums them by `weight`."""
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F

from trainer.context import RunContext
from utils.errors import ConfigError
from utils.registry import Registry

LOSSES = Registry("loss")


def charbonnier(fake: torch.Tensor, real: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.sqrt((fake - real) ** 2 + eps * eps).mean()


CRITERIA: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss, "l2": F.mse_loss, "charbonnier": charbonnier,
}


class Loss:
    def __init__(self, name: str, opt: Dict[str, Any], env: RunContext):
        self.name, self.opt, self.env = name, opt, env
        self.weight = float(opt["weight"])

    def read(self, state: Dict[str, Any], key: str) -> torch.Tensor:
        if key not in state:
            raise ConfigError(f"loss `{self.name}` reads `{key}`, which no injector wrote this step; "
                              f"available: {', '.join(sorted(state))}")
        return state[key]

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError


@LOSSES.register("pix")
class PixLoss(Loss):
    """Pixel loss between state[fake] and state[real] (scaled/offset as DLAS allows)."""

    def __init__(self, name: str, opt: Dict[str, Any], env: RunContext):
        super().__init__(name, opt, env)
        criterion = opt["criterion"]
        if criterion not in CRITERIA:
            raise ConfigError(f"loss `{name}`: unknown criterion `{criterion}`; known: {', '.join(CRITERIA)}")
        self.criterion = CRITERIA[criterion]

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        real = self.read(state, self.opt["real"]) * self.opt["real_scale"] + self.opt["real_offset"]
        return self.criterion(self.read(state, self.opt["fake"]).float(), real.float())


@LOSSES.register("direct")
class DirectLoss(Loss):
    """The mean of a state tensor (e.g. SRFlow's NLL), optionally negated and annealed in."""

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        loss = self.read(state, self.opt["key"]).float().mean()
        if self.opt.get("inverted"):
            loss = -loss
        anneal = self.opt["annealing_termination_step"]
        if anneal > 0:
            loss = loss * min(self.env.step, anneal) / anneal
        return loss


def build_losses(opt_losses: Dict[str, Dict[str, Any]], env: RunContext, where: str) -> List[Loss]:
    return [LOSSES.get(o["type"], f"{where}.{name}.type")(name, o, env) for name, o in opt_losses.items()]


# Imported after LOSSES exists: these modules register themselves (and their recipe keys).
from trainer import feature_loss, gan_losses, translational_loss  # noqa: E402,F401
