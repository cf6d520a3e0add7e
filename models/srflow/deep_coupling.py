"""SRFlow-DA's couplings: SRFlow's, with deeper conditioning nets of biased convolutions and no ActNorm."""
from typing import List, Tuple

import torch
from torch import nn

from models.srflow.coupling import CondAffineSeparatedAndCond, Conv2dZeros


class BiasConv(nn.Conv2d):
    """'Same' convolution with a bias (official `flow.Conv2d(do_actnorm=False)`); the coupling's fused first
    convolution reads it through `needs_init` and `folded` like a ConvActNorm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.normal_(self.weight, 0.0, 0.05)
        nn.init.zeros_(self.bias)

    def needs_init(self) -> bool:
        return False

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias


class DeepCondAffine(CondAffineSeparatedAndCond):
    """Each conditioning net is a 3x3 convolution, `n_hidden_layers` convolutions of `kernel_hidden`, each
    followed by ReLU, and SRFlow's zero-initialised output convolution. The variants differ in how they wire
    the hidden part h -> g, after the first convolution's activation h:

    - SRFlow-DA, SRFlow-DA-S: a plain stack (one Sequential, `fAffine.{0..}`);
    - SRFlow-DA-R: one skip over the stack, g = stack(h) + h;
    - SRFlow-DA-D: a skip over every pair of convolutions (n_hidden_layers // 2 residual blocks).

    R and D keep the three parts as `fAffine1` (first), `fAffine2` (hidden), `fAffine3` (output), as officially.
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int, eps: float, variant: str,
                 n_hidden_layers: int, kernel_hidden: int):
        self.variant, self.n_hidden_layers, self.kernel_hidden = variant, n_hidden_layers, kernel_hidden
        self.in_parts = variant in ("SRFlow-DA-R", "SRFlow-DA-D")
        super().__init__(in_channels, cond_channels, hidden_channels, eps)

    def _hidden(self, count: int) -> List[nn.Module]:
        width = self.hidden_channels
        return [m for _ in range(count) for m in (BiasConv(width, width, self.kernel_hidden), nn.ReLU())]

    def build_net(self, name: str, in_channels: int, out_channels: int) -> None:
        first = [BiasConv(in_channels, self.hidden_channels), nn.ReLU()]
        last = Conv2dZeros(self.hidden_channels, out_channels)
        if not self.in_parts:
            setattr(self, name, nn.Sequential(*first, *self._hidden(self.n_hidden_layers), last))
            return
        if self.variant == "SRFlow-DA-R":
            hidden = nn.Sequential(*self._hidden(self.n_hidden_layers))
        else:
            hidden = nn.ModuleList(nn.Sequential(*self._hidden(2)) for _ in range(self.n_hidden_layers // 2))
        setattr(self, name + "1", nn.Sequential(*first))
        setattr(self, name + "2", hidden)
        setattr(self, name + "3", nn.Sequential(last))

    def first_conv(self, name: str) -> nn.Conv2d:
        return getattr(self, name + "1" if self.in_parts else name)[0]

    def after_first(self, name: str, h: torch.Tensor) -> torch.Tensor:
        if not self.in_parts:
            net = getattr(self, name)
            for layer in net[2:]:
                h = layer(h)
            return h
        hidden = getattr(self, name + "2")
        if self.variant == "SRFlow-DA-R":
            g = hidden(h) + h
        else:
            g = h
            for block in hidden:
                g = block(g) + g
        return getattr(self, name + "3")(g)
