"""One flow step: ActNorm -> invertible 1x1 conv -> (optional) conditional affine coupling."""
from typing import Optional, Tuple, Union

import torch
from torch import nn

from models.srflow.actnorm import ActNorm
from models.srflow.conditioning import Conditioning
from models.srflow.invconv import InvConv1x1


class FlowStep(nn.Module):
    """`coupling=None` gives the official `additionalFlowNoAffine` steps (ActNorm and 1x1 conv only)."""

    def __init__(self, channels: int, coupling: Optional[nn.Module] = None):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        if coupling is not None:
            self.affine = coupling

    @property
    def has_coupling(self) -> bool:
        return hasattr(self, "affine")

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None, reverse: bool = False,
                ft: Union[torch.Tensor, Conditioning, None] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if not reverse:
            x, logdet = self.actnorm(x, logdet)
            x, logdet = self.invconv(x, logdet)
            if self.has_coupling:
                x, logdet = self.affine(x, logdet, ft=ft)
            return x, logdet
        if self.has_coupling:
            x, logdet = self.affine(x, logdet, reverse=True, ft=ft)
        x, logdet = self.invconv(x, logdet, reverse=True)
        return self.actnorm(x, logdet, reverse=True)
