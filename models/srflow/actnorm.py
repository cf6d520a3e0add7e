"""Activation normalisation (Glow): a per-channel affine map, initialised from the first training batch."""
from typing import Optional, Tuple

import torch
from torch import nn

from models.srflow.invertible import NO_COND, FlowCond, InvertibleLayer
from utils.dist import mean_over_processes


class ActNorm(InvertibleLayer):
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

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None, reverse: bool = False,
                cond: FlowCond = NO_COND) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.initialized and self.training:
            self.initialize(x)
        return super().forward(x, logdet, reverse, cond)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return self.logs.sum() * (x.shape[2] * x.shape[3])

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        return (x + self.bias) * torch.exp(self.logs), logdet + self._logdet(x)

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        return y * torch.exp(-self.logs) - self.bias, logdet - self._logdet(y)
