"""Invertible 1x1 convolution (Glow) with a dense weight; its inverse is computed in float64."""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.srflow.invertible import FlowCond, InvertibleLayer


class InvConv1x1(InvertibleLayer):
    """y = W x per pixel; logdet += log|det W| * H * W.

    In eval mode without autograd, log|det W| and W^-1 are cached until the weight changes
    (an optimizer step or a load bumps the tensor's version counter).
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(num_channels, num_channels))[0])
        self._cache = {}  # reverse -> (weight version key, (kernel, log|det W|))

    def _weights(self, reverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """(1x1 conv kernel, log|det W|) for the requested direction."""
        w = self.weight
        cacheable = not self.training and not torch.is_grad_enabled()
        key = (w._version, w.data_ptr(), w.dtype, w.device)
        cached = self._cache.get(reverse)
        if cacheable and cached is not None and cached[0] == key:
            return cached[1]
        logabsdet = torch.linalg.slogdet(w)[1]
        kernel = torch.inverse(w.double()).to(w.dtype) if reverse else w
        result = (kernel.view(*w.shape, 1, 1), logabsdet)
        if cacheable:
            self._cache[reverse] = (key, result)
        else:
            self._cache.clear()
        return result

    def _convolve(self, x: torch.Tensor, reverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """(W x or W^-1 x, log|det W| * H * W)."""
        kernel, logabsdet = self._weights(reverse)
        # In float32 under autocast too: the latents themselves pass through here, and a half-precision
        # product would not be undone by the inverse.
        with torch.autocast(x.device.type, enabled=False):
            y = F.conv2d(x, kernel.to(x.dtype))
        return y, logabsdet * (x.shape[2] * x.shape[3])

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        y, dlogdet = self._convolve(x, reverse=False)
        return y, logdet + dlogdet

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        x, dlogdet = self._convolve(y, reverse=True)
        return x, logdet - dlogdet
