"""Losses: each reads the step's `state` and returns a scalar; the step sums them by `weight`."""
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F

from trainer.context import RunContext
from utils.errors import ConfigError
from trainer.injectors import SCHEDULE_KEYS
from utils.recipe_keys import NUM, REQUIRED, Key
from utils.registry import Registry

LOSSES = Registry("loss")
LOSS_KEYS = {  # of every loss
    "type": Key(str, REQUIRED, "the loss (see below)"),
    "weight": Key(NUM, 1, "the loss is multiplied by this before the step sums its losses"),
    **SCHEDULE_KEYS,
}


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


@LOSSES.register("pix", keys={
    "criterion": Key(str, "l1", "l1, l2 or charbonnier"),
    "real": Key(str, REQUIRED, "state key of the target image"), "fake": Key(str, REQUIRED, "state key of the output"),
    "real_scale": Key(NUM, 1, "the target is multiplied by this"), "real_offset": Key(NUM, 0, "then this is added"),
    "report_metrics": Key(bool, False, "accepted for DLAS's recipes; no effect"),
})
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


@LOSSES.register("direct", keys={
    "key": Key(str, REQUIRED, "state key whose mean is the loss (SRFlow's `nll`)"),
    "inverted": Key(bool, False, "minimise minus the value"),
    "annealing_termination_step": Key(int, 0, "> 0: the weight falls linearly to 0 by this iteration", at_least=0),
})
class DirectLoss(Loss):
    """The mean of a state tensor (e.g. SRFlow's NLL), optionally negated and annealed in."""

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        loss = self.read(state, self.opt["key"]).float().mean()
        if self.opt.get("inverted"):
            loss = -loss
        anneal = self.opt["annealing_termination_step"]
        if anneal > 0:
            loss = loss * min(self.env.iteration, anneal) / anneal
        return loss


def build_losses(opt_losses: Dict[str, Dict[str, Any]], env: RunContext, where: str) -> List[Loss]:
    return [LOSSES.get(o["type"], f"{where}.{name}.type")(name, o, env) for name, o in opt_losses.items()]


# Imported after LOSSES exists: these modules register themselves (and their recipe keys).
from trainer import feature_loss, gan_losses, translational_loss  # noqa: E402,F401
