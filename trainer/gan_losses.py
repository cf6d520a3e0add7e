"""Adversarial losses: `discriminator_gan` trains a discriminator, `generator_gan` trains a generator through
one (DLAS's semantics).

`gan_type`: `gan` (binary cross-entropy on the logits), `lsgan` (least squares) or `ragan` (relativistic
average: each side is judged against the other side's mean). `noise` adds uniform noise in [0, noise) to
both inputs of the discriminator. `gradient_penalty` adds 10 * (|d D(real) / d real| - 1)^2, averaged over
the batch, to the discriminator's loss.
"""
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from trainer.losses import LOSSES, Loss
from utils.dist import unwrap
from utils.errors import ConfigError
from utils.recipe_keys import NUM, REQUIRED, STR_OR_LIST, TEXT, Key

GAN_TYPES = ("gan", "ragan", "lsgan")
GRADIENT_PENALTY_WEIGHT = 10.0
COMMON_KEYS = {
    "gan_type": Key(str, "gan", "gan, ragan or lsgan"),
    "real": Key(STR_OR_LIST, REQUIRED, "state key(s) of the real images, the discriminator's inputs", items=TEXT),
    "fake": Key(STR_OR_LIST, REQUIRED, "state key(s) of the generated images", items=TEXT),
    "noise": Key(NUM, 0, "uniform noise in [0, noise) added to both inputs of the discriminator", at_least=0),
}
DISCRIMINATOR_GAN_KEYS = {
    **COMMON_KEYS,
    "gradient_penalty": Key(bool, False, "add 10 * (|d D(real) / d real| - 1)^2 to the loss"),
    "discriminator": Key(str, None, "the discriminator (default: the network its step trains)",
                         names=("networks", "network")),
}
GENERATOR_GAN_KEYS = {
    **COMMON_KEYS,
    "discriminator": Key(str, REQUIRED, "the discriminator that judges the generator's output",
                         names=("networks", "network")),
    "detach_real": Key(bool, True, "no gradient through the real images"),
}


class GanLoss(Loss):
    def __init__(self, name: str, opt: Dict[str, Any], env: Any):
        super().__init__(name, opt, env)
        if opt["gan_type"] not in GAN_TYPES:
            raise ConfigError(f"loss `{name}`: gan_type `{opt['gan_type']}` is not supported; known: "
                              f"{', '.join(GAN_TYPES)}")
        self.step_networks: List[str] = []

    def criterion(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """How far the discriminator's logits are from saying `real` (1) or fake (0)."""
        target = torch.full_like(logits, 1.0 if real else 0.0, dtype=torch.float32)
        if self.opt["gan_type"] == "lsgan":
            return F.mse_loss(logits.float(), target)
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    def inputs(self, state: Dict[str, Any], side: str) -> List[torch.Tensor]:
        keys = self.opt[side] if isinstance(self.opt[side], list) else [self.opt[side]]
        return [self.read(state, key) for key in keys]

    def noisy(self, images: List[torch.Tensor]) -> List[torch.Tensor]:
        if not self.opt["noise"]:
            return images
        return [x + torch.rand_like(x) * self.opt["noise"] for x in images]

    def discriminator(self, name: str) -> nn.Module:
        if name not in self.env.networks:
            raise ConfigError(f"loss `{self.name}` names discriminator `{name}`, which is not under `networks`")
        net = self.env.networks[name]
        # A network that this step does not train is called outside DistributedDataParallel.
        return net if name in self.step_networks else unwrap(net)


@LOSSES.register("discriminator_gan", keys=DISCRIMINATOR_GAN_KEYS)
class DiscriminatorGanLoss(GanLoss):
    """Trains the discriminator (the network its step trains) to tell `real` from `fake` (detached)."""

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        net = self.discriminator(self.opt.get("discriminator") or self.step_networks[0])
        real = [x.detach().requires_grad_(self.opt["gradient_penalty"]) for x in self.inputs(state, "real")]
        fake = [x.detach() for x in self.inputs(state, "fake")]
        d_real, d_fake = net(*self.noisy(real)), net(*self.noisy(fake))
        if self.opt["gan_type"] == "ragan":
            loss = self.criterion(d_real - d_fake.mean(), True) + self.criterion(d_fake - d_real.mean(), False)
        else:
            loss = self.criterion(d_real, True) + self.criterion(d_fake, False)
        if self.opt["gradient_penalty"]:
            loss = loss + gradient_penalty(real[0], d_real)
        return loss


def gradient_penalty(images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's term on the real images: the discriminator's gradient norm per image kept near 1."""
    grads, = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return GRADIENT_PENALTY_WEIGHT * ((grads.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


@LOSSES.register("generator_gan", keys=GENERATOR_GAN_KEYS)
class GeneratorGanLoss(GanLoss):
    """Trains the generator to make `discriminator` call `fake` real; the discriminator itself is frozen."""

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        net = self.discriminator(self.opt["discriminator"])
        fake = self.noisy(self.inputs(state, "fake"))
        d_fake = net(*fake)
        if self.opt["gan_type"] != "ragan":
            return self.criterion(d_fake, True)
        real = self.noisy(self.inputs(state, "real"))
        d_real = net(*real)
        if self.opt["detach_real"]:
            d_real = d_real.detach()
        return (self.criterion(d_real - d_fake.mean(), False) + self.criterion(d_fake - d_real.mean(), True)) / 2
