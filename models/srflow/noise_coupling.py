"""NCSR's coupling: SRFlow's, plus an affine map of the second half conditioned on the noise level."""
from typing import Tuple

import torch
import torch.nn.functional as F

from models.srflow.coupling import CondAffineSeparatedAndCond, conditioning_net, sum_log
from models.srflow.invertible import FlowCond


class NoiseCondAffine(CondAffineSeparatedAndCond):
    """Between SRFlow's two affine maps, when `reads_std` and the level has a noise level `cond.std`:
    z2 -> (z2 + shift) * scale with (shift, scale) = fAffine_std(cat[z1, std at z's size]).

    `cond.std` is (B, 1, 1, 1) (one level per image, expanded to `std_channels`) or, with std_channels 3, a
    (B, 3, H, W) map (resized bicubically). Every coupling has `fAffine_std`, used or not, as officially.
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int, eps: float,
                 std_channels: int, reads_std: bool):
        super().__init__(in_channels, cond_channels, hidden_channels, eps)
        self.std_channels = std_channels
        self.reads_std = reads_std
        self.fAffine_std = conditioning_net(self.channels_for_nn + std_channels,
                                            2 * (in_channels - self.channels_for_nn), hidden_channels)

    def expand_std(self, std: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if self.std_channels == 3 and std.shape[1] == 3:
            return F.interpolate(std, size=size, mode="bicubic", align_corners=False)
        return std.expand(-1, self.std_channels, *size)

    def between(self, z: torch.Tensor, logdet: torch.Tensor, cond: FlowCond,
                reverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.reads_std or cond.std is None:
            return z, logdet
        z1, z2 = z[:, :self.channels_for_nn], z[:, self.channels_for_nn:]
        std = self.expand_std(cond.std.to(z), tuple(z.shape[-2:]))
        with torch.autocast(z.device.type, enabled=False):  # reads latents: as fAffine does (coupling.py)
            shift, scale = self.affine_of(self.fAffine_std(torch.cat([z1, std], dim=1)))
        if reverse:
            return torch.cat([z1, z2 / scale - shift], dim=1), logdet - sum_log(scale)
        return torch.cat([z1, (z2 + shift) * scale], dim=1), logdet + sum_log(scale)
