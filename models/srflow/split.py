"""Split2d: factor out half the channels as latents under a learned prior conditioned on the other half."""
import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from models.srflow.actnorm import start_logdet
from models.srflow.coupling import Conv2dZeros

LOG_2PI = math.log(2 * math.pi)


def gaussian_logp(x: torch.Tensor, mean: Optional[torch.Tensor] = None,
                  logs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample log-density of a diagonal Gaussian (standard normal when mean/logs are None)."""
    if mean is None:
        density = -0.5 * (x ** 2 + LOG_2PI)
    else:
        density = -0.5 * (logs * 2.0 + (x - mean) ** 2 / torch.exp(logs * 2.0) + LOG_2PI)
    return density.sum(dim=(1, 2, 3))


class Split2d(nn.Module):
    """Keeps the first C - round(C * consume_ratio) channels; the rest, z2, become eps = (z2 - mean) / std
    with (mean, log std) = Conv2dZeros(kept). As in the official code the returned logdet gains
    log N(z2; mean, std) (times `nll_weight`, DLAS's `gaussian_loss_weight`), not only a Jacobian term.

    Encode appends eps to `epses` when given. Decode pops eps from `epses` when it is a non-empty
    list, else draws eps ~ N(0, eps_std^2) (zeros at eps_std 0, i.e. the prior's mean).
    """

    def __init__(self, channels: int, consume_ratio: float = 0.5, logs_eps: float = 0.0,
                 nll_weight: float = 1.0):
        super().__init__()
        self.num_channels_consume = int(round(channels * consume_ratio))
        self.num_channels_pass = channels - self.num_channels_consume
        self.conv = Conv2dZeros(self.num_channels_pass, 2 * self.num_channels_consume)
        self.logs_eps = logs_eps
        self.nll_weight = nll_weight

    def prior(self, z1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(z1)
        return h[:, 0::2], h[:, 1::2]

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None, reverse: bool = False,
                epses: Optional[List[torch.Tensor]] = None,
                eps_std: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        logdet = start_logdet(x, logdet)
        if not reverse:
            z1, z2 = x[:, :self.num_channels_pass], x[:, self.num_channels_pass:]
            mean, logs = self.prior(z1)
            if epses is not None:
                epses.append((z2 - mean) / (torch.exp(logs) + self.logs_eps))
            return z1, logdet + gaussian_logp(z2, mean, logs) * self.nll_weight
        mean, logs = self.prior(x)
        if epses:
            eps = epses.pop().to(x)  # the latents' dtype (float32 under autocast), not the prior's
        elif eps_std == 0:
            eps = torch.zeros_like(mean)
        else:
            eps = torch.randn_like(mean) * (1.0 if eps_std is None else eps_std)
        z2 = mean + (torch.exp(logs) + self.logs_eps) * eps
        return torch.cat([x, z2], dim=1), logdet - gaussian_logp(z2, mean, logs) * self.nll_weight
