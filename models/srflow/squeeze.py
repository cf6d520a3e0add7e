"""Space-to-depth by 2: (B, C, H, W) -> (B, 4C, H/2, W/2), new channel = 4c + 2dy + dx."""
from typing import Optional, Tuple

import torch

from models.memory_format import to_compute_format
from models.srflow.invertible import FlowCond, InvertibleLayer


class Squeeze(InvertibleLayer):
    """Volume-preserving (J = 0). Its reshape leaves NCHW: the output goes back to the layout the flow computes
    in (`channels_last`, as models.memory_format reads it)."""

    def __init__(self, channels_last: Optional[bool] = None):
        super().__init__()
        self.channels_last = channels_last

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return to_compute_format(x.reshape(b, c * 4, h // 2, w // 2), self.channels_last), logdet

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = y.shape
        y = y.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return to_compute_format(y.reshape(b, c // 4, h * 2, w * 2), self.channels_last), logdet
