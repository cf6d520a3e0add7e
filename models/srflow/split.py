"""Split2d: factor out half the channels as latents under a learned prior conditioned on the other half."""
from typing import Tuple

import torch

from models.srflow.coupling import Conv2dZeros
from models.srflow.gaussian import gaussian_logp
from models.srflow.invertible import FlowCond, InvertibleLayer


class Split2d(InvertibleLayer):
    """Keeps the first C - round(C * consume_ratio) channels; the rest, z2, become eps = (z2 - mean) / std
    with (mean, log std) = Conv2dZeros(kept). As in the official code the returned logdet gains
    log N(z2; mean, std) (times `nll_weight`, DLAS's `gaussian_loss_weight`), not only a Jacobian term.

    Encode appends eps to `cond.epses` when it is a list. Decode pops eps from `cond.epses` when it is a
    non-empty list, else draws eps ~ N(0, cond.eps_std^2) (zeros at eps_std 0, i.e. the prior's mean).
    """

    def __init__(self, channels: int, consume_ratio: float, logs_eps: float, nll_weight: float):
        super().__init__()
        self.num_channels_consume = int(round(channels * consume_ratio))
        self.num_channels_pass = channels - self.num_channels_consume
        self.conv = Conv2dZeros(self.num_channels_pass, 2 * self.num_channels_consume)
        self.logs_eps = logs_eps
        self.nll_weight = nll_weight

    def prior(self, z1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(z1.device.type, enabled=False):  # reads latents: as in the couplings' fAffine
            h = self.conv(z1)
        return h[:, 0::2], h[:, 1::2]

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = x[:, :self.num_channels_pass], x[:, self.num_channels_pass:]
        mean, logs = self.prior(z1)
        if cond.epses is not None:
            cond.epses.append((z2 - mean) / (torch.exp(logs) + self.logs_eps))
        return z1, logdet + gaussian_logp(z2, mean, logs) * self.nll_weight

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, logs = self.prior(y)
        if cond.epses:
            eps = cond.epses.pop().to(y)  # the latents' dtype (float32 under autocast), not the prior's
        elif cond.eps_std == 0:
            eps = torch.zeros_like(mean)
        else:
            eps = torch.randn_like(mean) * (1.0 if cond.eps_std is None else cond.eps_std)
        z2 = mean + (torch.exp(logs) + self.logs_eps) * eps
        return torch.cat([y, z2], dim=1), logdet - gaussian_logp(z2, mean, logs) * self.nll_weight
