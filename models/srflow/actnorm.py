"""Activation normalisation (Glow): a per-channel affine map, initialised from the first training batch."""
from typing import Optional, Tuple

import torch
from torch import nn

from utils.dist import mean_over_processes


def start_logdet(x: torch.Tensor, logdet: Optional[torch.Tensor]) -> torch.Tensor:
    """`logdet`, or per-sample zeros when the caller does not track one."""
    return x.new_zeros(x.shape[0]) if logdet is None else logdet


class ActNorm(nn.Module):
    """y = (x + bias) * exp(logs); logdet += sum(logs) * H * W.

    Like the official code, the first forward in training mode sets bias/logs so that the batch's
    output has zero mean and unit variance per channel, unless a bias is already non-zero.
    Loading a state dict (official, DLAS or ours) also counts as initialised, without any extra key.
    """

    def __init__(self, num_channels: int, scale: float = 1.0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.scale = scale
        self.initialized = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        if (self.bias != 0).any():
            self.initialized = True
            return
        # Under torchrun, the statistics of the global batch (shards are equal in size): every process
        # starts from the same values, those one process would compute on the whole batch.
        bias = -mean_over_processes(x.mean(dim=[0, 2, 3], keepdim=True))
        var = mean_over_processes(((x + bias) ** 2).mean(dim=[0, 2, 3], keepdim=True))
        self.bias.copy_(bias)
        self.logs.copy_(torch.log(self.scale / (var.sqrt() + 1e-6)))
        self.initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "bias" in state_dict:
            self.initialized = True

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None,
                reverse: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.initialized and self.training:
            self.initialize(x)
        dlogdet = self.logs.sum() * (x.shape[2] * x.shape[3])
        if not reverse:
            return (x + self.bias) * torch.exp(self.logs), start_logdet(x, logdet) + dlogdet
        return x * torch.exp(-self.logs) - self.bias, start_logdet(x, logdet) - dlogdet
