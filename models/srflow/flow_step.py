"""One flow step: ActNorm -> invertible 1x1 conv -> (optional) conditional affine coupling."""
from typing import Optional, Tuple

import torch

from models.srflow.actnorm import ActNorm
from models.srflow.invconv import InvConv1x1
from models.srflow.invertible import FlowCond, InvertibleLayer


class FlowStep(InvertibleLayer):
    """`coupling=None` gives the official `additionalFlowNoAffine` steps (ActNorm and 1x1 conv only)."""

    def __init__(self, channels: int, coupling: Optional[InvertibleLayer] = None):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        if coupling is not None:
            self.affine = coupling

    @property
    def has_coupling(self) -> bool:
        return hasattr(self, "affine")

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.actnorm(x, logdet)
        x, logdet = self.invconv(x, logdet)
        if self.has_coupling:
            x, logdet = self.affine(x, logdet, cond=cond)
        return x, logdet

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.has_coupling:
            y, logdet = self.affine(y, logdet, reverse=True, cond=cond)
        y, logdet = self.invconv(y, logdet, reverse=True)
        return self.actnorm(y, logdet, reverse=True)

    def recomputable(self) -> bool:
        # Not while an ActNorm still initialises from this batch: the recomputation would not repeat that.
        return all(m.initialized for m in self.modules() if isinstance(m, ActNorm))
