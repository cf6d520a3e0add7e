"""RRDBNet (ESRGAN's generator) with DLAS/BasicSR parameter names.

As in DLAS and SRFlow, the trunk's long skip starts from the last block's output
(`feat + conv_body(body(feat))` with `feat` the body output), not from `conv_first` as in the
original ESRGAN code: a stage-1 RRDB trained here then computes exactly what SRFlow's embedded
RRDB computes.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models import NETWORKS
from models.memory_format import to_compute_format
from utils.errors import ConfigError


def scaled_kaiming_(module: nn.Module, scale: float) -> None:
    """ESRGAN/BasicSR residual init: kaiming normal (fan_in) scaled down, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            m.weight.data *= scale
            if m.bias is not None:
                m.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, nf if i == 4 else gc, 3, 1, 1))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        scaled_kaiming_(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """LR image in [0, 1] -> HR image; `scale` 2, 4 or 8 (after an optional strided first conv)."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32,
                 scale: int = 4, initial_stride: int = 1, blocks_per_checkpoint: int = 1,
                 checkpointing: bool = False, channels_last: Optional[bool] = None):
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"RRDBNet scale must be 2, 4 or 8, got {scale}")
        self.scale = scale
        self.blocks_per_checkpoint = max(1, int(blocks_per_checkpoint))
        self.checkpointing = checkpointing
        self.channels_last = channels_last  # None: models.memory_format decides per device
        if initial_stride == 1:
            self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1)
        else:  # DLAS: a strided 7x7 stem for inputs larger than the LR size
            self.conv_first = nn.Conv2d(in_nc, nf, 7, initial_stride, 3)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        if scale == 8:
            self.conv_up3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        for m in self.outer_convs():
            scaled_kaiming_(m, 0.1)

    def outer_convs(self) -> List[nn.Conv2d]:
        names = ["conv_first", "conv_body", "conv_up1", "conv_up2", "conv_up3", "conv_hr", "conv_last"]
        return [getattr(self, n) for n in names if hasattr(self, n)]

    def _run_blocks(self, feat: torch.Tensor, start: int, stop: int) -> Tuple[torch.Tensor, ...]:
        outs = []
        for block in self.body[start:stop]:
            feat = block(feat)
            outs.append(feat)
        return tuple(outs)

    def trunk(self, x: torch.Tensor, keep: Sequence[int] = ()) -> Tuple[torch.Tensor, Dict[int, torch.Tensor]]:
        """LR features `body + conv_body(body)` and the outputs of the blocks whose index is in `keep`."""
        feat = self.conv_first(to_compute_format(x, self.channels_last))
        use_ckpt = self.checkpointing and self.training and torch.is_grad_enabled()
        kept = {}
        step = self.blocks_per_checkpoint
        for start in range(0, len(self.body), step):
            stop = min(start + step, len(self.body))
            if use_ckpt:
                outs = checkpoint(self._run_blocks, feat, start, stop, use_reentrant=False)
            else:
                outs = self._run_blocks(feat, start, stop)
            for i, out in enumerate(outs, start):
                if i in keep:
                    kept[i] = out
            feat = outs[-1]
        return feat + self.conv_body(feat), kept

    def up(self, conv: nn.Conv2d, feat: torch.Tensor) -> torch.Tensor:
        """One upsampling stage before its activation: nearest x2, then conv."""
        return conv(F.interpolate(feat, scale_factor=2, mode="nearest"))

    def head(self, feat: torch.Tensor) -> torch.Tensor:
        """HR features after the last upsampling stage (activated) -> image."""
        return self.conv_last(self.lrelu(self.conv_hr(feat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat, _ = self.trunk(x)
        out = self.lrelu(self.up(self.conv_up1, feat))
        if self.scale == 2:  # DLAS: the second up-conv runs without upsampling
            out = self.lrelu(self.conv_up2(out))
        else:
            out = self.lrelu(self.up(self.conv_up2, out))
            if self.scale == 8:
                out = self.lrelu(self.up(self.conv_up3, out))
        return self.head(out).contiguous()


@NETWORKS.register("RRDBNet")
def build_rrdbnet(opt_net: dict, opt: dict) -> RRDBNet:
    scale = opt_net.get("scale", opt.get("scale", 4))
    if scale not in (2, 4, 8):
        raise ConfigError(f"RRDBNet `scale` must be 2, 4 or 8, got {scale!r}")
    for key in ("nf", "nb"):
        if key not in opt_net:
            raise ConfigError(f"RRDBNet needs `{key}` in its network section")
    return RRDBNet(in_nc=opt_net.get("in_nc", 3), out_nc=opt_net.get("out_nc", 3), nf=opt_net["nf"],
                   nb=opt_net["nb"], gc=opt_net.get("gc", 32), scale=scale,
                   initial_stride=opt_net.get("initial_stride", 1),
                   blocks_per_checkpoint=opt_net.get("blocks_per_checkpoint", 1),
                   checkpointing=bool(opt.get("checkpointing_enabled", False)),
                   channels_last=opt.get("channels_last"))
