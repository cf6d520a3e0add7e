"""Space-to-depth by f (2; SRFlow-DA-S: the scale): (B, C, H, W) -> (B, f*f*C, H/f, W/f), channel f*f*c + f*dy + dx."""
from typing import Optional, Tuple

import torch

from models.memory_format import to_compute_format
from models.srflow.invertible import FlowCond, InvertibleLayer


class Squeeze(InvertibleLayer):
    """Volume-preserving (J = 0). Its reshape leaves NCHW: the output goes back to the layout the flow computes
    in (`channels_last`, as models.memory_format reads it)."""

    def __init__(self, channels_last: Optional[bool] = None, factor: int = 2):
        super().__init__()
        self.channels_last = channels_last
        self.factor = factor

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        f = self.factor
        x = x.view(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return to_compute_format(x.reshape(b, c * f * f, h // f, w // f), self.channels_last), logdet

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = y.shape
        f = self.factor
        y = y.view(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return to_compute_format(y.reshape(b, c // (f * f), h * f, w * f), self.channels_last), logdet
