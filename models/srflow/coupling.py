"""SRFlow's conditional affine coupling `CondAffineSeparatedAndCond` and its conditioning networks."""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.srflow.actnorm import ActNorm
from models.srflow.conditioning import Features, conv3x3
from models.srflow.invertible import FlowCond, InvertibleLayer

Affine = Tuple[torch.Tensor, torch.Tensor]  # (shift, scale): z -> (z + shift) * scale


class ConvActNorm(nn.Conv2d):
    """Bias-free 'same' convolution followed by ActNorm (official `flow.Conv2d`).

    Once the ActNorm is initialised, both run as one convolution with the ActNorm folded in.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.normal_(self.weight, 0.0, 0.05)
        self.actnorm = ActNorm(out_channels)

    def needs_init(self) -> bool:
        """True while the ActNorm still waits for its data-dependent initialisation (unfused path)."""
        return self.training and not self.actnorm.initialized

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the convolution with the ActNorm folded in: (Wx + b) * e^s = (W e^s) x + b e^s."""
        scale = torch.exp(self.actnorm.logs).view(-1)
        return self.weight * scale.view(-1, 1, 1, 1), self.actnorm.bias.view(-1) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.needs_init():
            return self.actnorm(super().forward(x))[0]
        return F.conv2d(x, *self.folded(), padding=self.padding)


class Conv2dZeros(nn.Conv2d):
    """Zero-initialised 3x3 convolution whose output is scaled by exp(3 * logs), so a new flow starts as identity."""

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0):
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.exp(self.logs * self.logscale_factor).view(-1)  # folded into weight and bias
        return F.conv2d(x, self.weight * scale.view(-1, 1, 1, 1), self.bias * scale, padding=1)


def conditioning_net(in_channels: int, out_channels: int, hidden_channels: int) -> nn.Sequential:
    """Conv3x3+ActNorm, ReLU, Conv1x1+ActNorm, ReLU, Conv2dZeros (indices 0..4 are the official names)."""
    return nn.Sequential(ConvActNorm(in_channels, hidden_channels, 3), nn.ReLU(),
                         ConvActNorm(hidden_channels, hidden_channels, 1), nn.ReLU(),
                         Conv2dZeros(hidden_channels, out_channels))


def sum_log(scale: torch.Tensor) -> torch.Tensor:
    return torch.log(scale).sum(dim=(1, 2, 3))


class CondAffineSeparatedAndCond(InvertibleLayer):
    """Two affine maps: one from the conditioning features alone on all channels (`fFeatures`),
    then one from [first half, features] on the second half (`fAffine`).

    shift = h[:, 0::2], scale = sigmoid(h[:, 1::2] + 2) + eps, z -> (z + shift) * scale.

    `cond.features` is the level's conditioning, a tensor or a `Conditioning` in parts. The first convolutions'
    feature parts do not depend on z: both nets' are computed in one convolution, and fAffine's z part
    separately. That equals the official convolution of cat[z1, ft] and spares its backward pass the
    gradient with respect to ft. Initialised ActNorms are folded into the convolutions before them;
    all of this matches the official arithmetic up to float round-off.
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int, eps: float):
        super().__init__()
        self.in_channels = in_channels
        self.channels_for_nn = in_channels // 2
        self.hidden_channels = hidden_channels
        self.eps = eps
        self.build_net("fAffine", self.channels_for_nn + cond_channels, 2 * (in_channels - self.channels_for_nn))
        self.build_net("fFeatures", cond_channels, 2 * in_channels)

    # A conditioning net is named (fAffine, fFeatures); subclasses with other nets override these three.
    def build_net(self, name: str, in_channels: int, out_channels: int) -> None:
        """Registers conditioning net `name` under its official module names."""
        setattr(self, name, conditioning_net(in_channels, out_channels, self.hidden_channels))

    def first_conv(self, name: str) -> nn.Conv2d:
        """The net's first (3x3) convolution: a ConvActNorm or a convolution with `needs_init` and `folded`."""
        return getattr(self, name)[0]

    def after_first(self, name: str, h: torch.Tensor) -> torch.Tensor:
        """The rest of the net, from its first convolution's activated output."""
        net = getattr(self, name)
        return net[4](torch.relu(net[2](h)))

    def _first_conv(self, name: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(weight, bias) of a conditioning net's first convolution, its ActNorm folded in when initialised."""
        conv = self.first_conv(name)
        return (conv.weight, None) if conv.needs_init() else conv.folded()

    def _shift_scale(self, name: str, pre: torch.Tensor, dtype: torch.dtype) -> Affine:
        """The rest of a conditioning net, from its first convolution's output; in the latents' `dtype` (float32
        under autocast too: shift and scale act on the latents, and log(scale) is the log-determinant)."""
        conv = self.first_conv(name)
        if conv.needs_init():
            pre = conv.actnorm(pre)[0]
        return self.affine_of(self.after_first(name, torch.relu(pre)).to(dtype))

    def affine_of(self, h: torch.Tensor) -> Affine:
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0) + self.eps

    def _conditioned(self, ft: Features,
                     dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], Affine]]:
        """fFeatures' (shift, scale) from the conditioning, and fAffine as a function of z1 alone."""
        n = self.channels_for_nn
        w_features, b_features = self._first_conv("fFeatures")
        w_affine, b_affine = self._first_conv("fAffine")
        w_affine_z, w_affine_ft = w_affine.split([n, w_affine.shape[1] - n], dim=1)  # cat[z1, ft]'s parts
        bias = None
        if b_features is not None or b_affine is not None:
            zeros = w_features.new_zeros(self.hidden_channels)
            bias = torch.cat([zeros if b is None else b for b in (b_features, b_affine)])
        pre_ft = conv3x3(ft, [w_features, w_affine_ft], bias)
        pre_features, pre_affine = pre_ft.split(self.hidden_channels, dim=1)
        shift_ft, scale_ft = self._shift_scale("fFeatures", pre_features, dtype)
        padding = self.first_conv("fAffine").padding

        def self_affine(z1: torch.Tensor) -> Affine:
            # What reads z1 runs in the latents' dtype, under autocast too: in bf16, encode and decode could round
            # z1s that differ by float32 round-off apart, and decode would not invert encode. (The features'
            # convolution above, most of the work, depends on no latent: it may run in bf16.)
            with torch.autocast(z1.device.type, enabled=False):
                pre = F.conv2d(z1, w_affine_z.to(z1.dtype), padding=padding) + pre_affine.to(z1.dtype)
                return self._shift_scale("fAffine", pre, dtype)
        return shift_ft, scale_ft, self_affine

    def between(self, z: torch.Tensor, logdet: torch.Tensor, cond: FlowCond,
                reverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """A further invertible map between the features' affine and the self-conditioned one (NCSR's noise-level
        coupling); none in SRFlow."""
        return z, logdet

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        shift_ft, scale_ft, self_affine = self._conditioned(cond.features, x.dtype)
        z, logdet = self.between((x + shift_ft) * scale_ft, logdet + sum_log(scale_ft), cond, reverse=False)
        z1, z2 = z[:, :self.channels_for_nn], z[:, self.channels_for_nn:]
        shift, scale = self_affine(z1)
        z2 = (z2 + shift) * scale
        return torch.cat([z1, z2], dim=1), logdet + sum_log(scale)

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        shift_ft, scale_ft, self_affine = self._conditioned(cond.features, y.dtype)
        z1, z2 = y[:, :self.channels_for_nn], y[:, self.channels_for_nn:]
        shift, scale = self_affine(z1)
        z, logdet = self.between(torch.cat([z1, z2 / scale - shift], dim=1), logdet - sum_log(scale), cond, reverse=True)
        return z / scale_ft - shift_ft, logdet - sum_log(scale_ft)
