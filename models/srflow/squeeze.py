"""Space-to-depth by 2: (B, C, H, W) -> (B, 4C, H/2, W/2), new channel = 4c + 2dy + dx."""
from typing import Optional, Tuple

import torch
from torch import nn

from models.srflow.actnorm import start_logdet


class Squeeze(nn.Module):
    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None,
                reverse: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        logdet = start_logdet(x, logdet)  # volume-preserving
        if not reverse:
            x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
            return x.reshape(b, c * 4, h // 2, w // 2), logdet
        x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // 4, h * 2, w * 2), logdet
