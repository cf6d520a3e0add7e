"""RRDBNet (ESRGAN's generator) with DLAS/BasicSR parameter names.

As in DLAS and SRFlow, the trunk's long skip starts from the last block's output
(`feat + conv_body(body(feat))` with `feat` the body output), not from `conv_first` as in the
original ESRGAN code: a stage-1 RRDB trained here then computes exactly what SRFlow's embedded
RRDB computes.
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models import NETWORKS
from models.layouts import RECOGNISERS, block_count
from models.memory_format import to_compute_format
from models.recipe_section import given
from utils.errors import ConfigError
from utils.recipe_keys import Key, declare_section


def scaled_kaiming_(module: nn.Module, scale: float) -> None:
    """ESRGAN/BasicSR residual init: kaiming normal (fan_in) scaled down, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            m.weight.data *= scale
            if m.bias is not None:
                m.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, nf if i == 4 else gc, 3, 1, 1))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        scaled_kaiming_(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        xc = x.to(x1.dtype)  # under autocast the concatenations are bf16, while x, the trunk, stays float32
        x2 = self.lrelu(self.conv2(torch.cat((xc, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((xc, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((xc, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((xc, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


# The recipe keys of an RRDB (`networks.<name>` of which_model_G RRDBNet, and the RRDB part of srflow).
SHAPE_KEYS = {
    "in_nc": Key(int, 3, "image channels in", at_least=1),
    "out_nc": Key(int, 3, "image channels out", at_least=1),
    "nf": Key(int, 64, "feature channels", at_least=1),
    "nb": Key(int, 23, "RRDB blocks", at_least=1),
    "gc": Key(int, 32, "growth channels of the dense blocks", at_least=1),
    "scale": Key(int, 4, "2, 4 or 8 (default: the recipe's `scale`, whose default this is)", at_least=1,
                 fill=False),
}
INITIAL_STRIDE = Key(int, 1, "DLAS: a strided 7x7 first convolution for inputs larger than the LR size",
                     at_least=1)
# Top-level keys the networks read.
CHECKPOINTING = Key(bool, False, "gradient checkpointing: recompute the RRDB blocks' activations in the backward "
                    "pass (less memory, more time)")
CHANNELS_LAST = Key(bool, None, "compute in the channels_last layout; absent: on the CPU (oneDNN is 1.1-1.2x "
                    "faster on it) and on CUDA under `fp16`")
declare_section("checkpointing_enabled", CHECKPOINTING)
declare_section("channels_last", CHANNELS_LAST)
KEYS = {**SHAPE_KEYS, "initial_stride": INITIAL_STRIDE, "blocks_per_checkpoint": Key(int, 1, "RRDB blocks per gradient checkpoint (with the "
                                                   "top-level `checkpointing_enabled`)", at_least=1,
                                                   weights_fit=True)}


@dataclass(frozen=True)
class RRDBConfig:
    """RRDBNet's options; their defaults are those of the recipe keys above (and two top-level ones)."""
    in_nc: int = KEYS["in_nc"].default
    out_nc: int = KEYS["out_nc"].default
    nf: int = KEYS["nf"].default
    nb: int = KEYS["nb"].default
    gc: int = KEYS["gc"].default
    scale: int = KEYS["scale"].default
    initial_stride: int = INITIAL_STRIDE.default
    blocks_per_checkpoint: int = KEYS["blocks_per_checkpoint"].default
    checkpointing: bool = CHECKPOINTING.default  # the recipe's top-level `checkpointing_enabled`
    channels_last: Optional[bool] = CHANNELS_LAST.default  # the recipe's top-level `channels_last`


RECIPE_KEYS = ("in_nc", "out_nc", "nf", "nb", "gc", "initial_stride", "blocks_per_checkpoint")


def rrdb_config(opt_net: dict, opt: dict) -> RRDBConfig:
    """RRDBConfig from a recipe's network section and the recipe (the network's `scale` falls back to the
    recipe's); what neither gives keeps its default."""
    return RRDBConfig(**given(**{key: opt_net.get(key) for key in RECIPE_KEYS},
                              scale=opt_net.get("scale") or opt.get("scale"),
                              checkpointing=opt.get("checkpointing_enabled"), channels_last=opt.get("channels_last")))


class RRDBNet(nn.Module):
    """LR image in [0, 1] -> HR image; `scale` 2, 4 or 8 (after an optional strided first conv).

    Built from an RRDBConfig, or from its fields as keywords: RRDBNet(nf=8, nb=2).
    """

    def __init__(self, config: Optional[RRDBConfig] = None, **options):
        super().__init__()
        config = replace(config or RRDBConfig(), **options)
        if config.scale not in (2, 4, 8):
            raise ValueError(f"RRDBNet scale must be 2, 4 or 8, got {config.scale}")
        nf = config.nf
        self.scale = config.scale
        self.blocks_per_checkpoint = max(1, int(config.blocks_per_checkpoint))
        self.checkpointing = config.checkpointing
        self.channels_last = config.channels_last  # None: models.memory_format decides per device
        if config.initial_stride == 1:
            self.conv_first = nn.Conv2d(config.in_nc, nf, 3, 1, 1)
        else:  # DLAS: a strided 7x7 stem for inputs larger than the LR size
            self.conv_first = nn.Conv2d(config.in_nc, nf, 7, config.initial_stride, 3)
        self.body = nn.Sequential(*[RRDB(nf, config.gc) for _ in range(config.nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        if self.scale == 8:
            self.conv_up3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, config.out_nc, 3, 1, 1)
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
        # The trunk (the residual stream through the blocks) in the input's dtype, under autocast too: summed in
        # bf16 over 23 blocks it drifts 3x further from float32 than this, at the same speed.
        feat = self.conv_first(to_compute_format(x, self.channels_last)).to(x.dtype)
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

    def upsampled(self, feat: torch.Tensor, until: Optional[float] = None) -> List[Tuple[int, torch.Tensor]]:
        """The up-convolutions' outputs (LeakyReLU applied) with their size over the LR size, in turn: all of
        them (the last one is what `head` reads), or, with `until`, only those needed to reach that factor.
        Each doubles the size by nearest interpolation first; at 2x (DLAS) the second one runs without it."""
        convs = [self.conv_up1, self.conv_up2] + ([self.conv_up3] if self.scale == 8 else [])
        outs, factor = [], 1
        for i, conv in enumerate(convs):
            if until is not None and factor >= until:
                break
            if not (self.scale == 2 and i == 1):
                feat, factor = F.interpolate(feat, scale_factor=2, mode="nearest"), factor * 2
            feat = self.lrelu(conv(feat))
            outs.append((factor, feat))
        return outs

    def head(self, feat: torch.Tensor) -> torch.Tensor:
        """HR features after the last upsampling stage (activated) -> image."""
        return self.conv_last(self.lrelu(self.conv_hr(feat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat, _ = self.trunk(x)
        return self.head(self.upsampled(feat)[-1][1]).contiguous()


@NETWORKS.register("RRDBNet", keys=KEYS)
def build_rrdbnet(opt_net: dict, opt: dict) -> RRDBNet:
    config = rrdb_config(opt_net, opt)
    if config.scale not in (2, 4, 8):
        raise ConfigError(f"RRDBNet `scale` must be 2, 4 or 8, got {config.scale!r}")
    return RRDBNet(config)


def rrdb_layout(sd: dict) -> Optional[Tuple[dict, str]]:
    """The RRDBNet section of a state dict in this project's names, or None. The weights do not tell 4x from 2x
    (the same tensors): 4x is assumed, as the official ESRGAN and SRFlow releases are; 8x has a third up-conv."""
    if not {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight"} <= set(sd):
        return None
    first = sd["conv_first.weight"]
    if first.shape[-1] != 3:
        raise ConfigError("its RRDB starts with a 7x7 convolution (DLAS's initial_stride), whose stride the "
                          "weights do not record: use test.py -opt with the recipe it was trained with")
    section = {"which_model_G": "RRDBNet", "in_nc": first.shape[1], "out_nc": sd["conv_last.weight"].shape[0],
               "nf": first.shape[0], "nb": block_count(sd, "body"), "gc": sd["body.0.rdb1.conv1.weight"].shape[0],
               "scale": 8 if "conv_up3.weight" in sd else 4}
    guess = "" if section["scale"] == 8 else " (4x assumed: a 2x RRDB has the same tensors)"
    return section, f"RRDBNet nf {section['nf']}, nb {section['nb']}, {section['scale']}x{guess}"


@RECOGNISERS.register("RRDBNet")
def recognise_rrdbnet(sd: dict) -> Optional[Tuple[dict, str]]:
    return rrdb_layout(sd)
