"""ESRGAN's VGG-style discriminators, as DLAS defines them (`type: discriminator`, `which_model_D`).

Five stages, each a 3x3 convolution then a strided 4x4 one, halve the crop five times; two linear layers
turn the remaining (image_size / 32)^2 cells into one realness logit per image. Parameter names are DLAS's
(conv0_0 ... conv4_1, bn0_1 ... bn4_1, linear1, linear2), so its checkpoints load strictly.
"""
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models import DISCRIMINATORS
from utils.errors import ConfigError
from utils.options import as_list
from utils.recipe_keys import Key, recipe_rule

# The recipe keys of a `networks.<name>` section of type discriminator (both models share them).
KEYS = {
    "in_nc": Key(int, 3, "channels of the images it judges", at_least=1),
    "nf": Key(int, 64, "width of the first stage (later stages: 2x, 4x, 8x, 8x)", at_least=8),
    "image_size": Key(int, 128, "the side of the square crops it judges", at_least=32),
    "extra_conv": Key(bool, False, "a sixth halving stage (crops a multiple of 64)"),
    "do_checkpointing": Key(bool, False, "recompute activations in backward (less memory, slower)"),
    "scale": Key(int, None, "accepted for DLAS's recipes; a discriminator has no scale and ignores it",
                 at_least=1, fill=False),
}
HALVINGS = 5  # stages 0..4, each ending in a stride-2 convolution


def crop_multiple(extra_conv: bool) -> int:
    """The crop side must be a multiple of this, so that every halving is exact."""
    return 2 ** (HALVINGS + int(extra_conv))


class VGGDiscriminator(nn.Module):
    """`norm` 'batch' is discriminator_vgg_128, 'group' (8 groups) is discriminator_vgg_128_gn."""

    def __init__(self, in_nc: int = 3, nf: int = 64, image_size: int = 128, norm: str = "batch",
                 extra_conv: bool = False, do_checkpointing: bool = False):
        super().__init__()
        if image_size % crop_multiple(extra_conv):
            raise ValueError(f"image_size {image_size} is not a multiple of {crop_multiple(extra_conv)}")
        self.do_checkpointing = do_checkpointing
        self.extra_conv = extra_conv
        widths = [nf, nf * 2, nf * 4, nf * 8, nf * 8]
        if extra_conv:  # DLAS widens the extra stage only in the BatchNorm variant
            widths.append(nf * 16 if norm == "batch" else nf * 8)

        def normalise(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels, affine=True) if norm == "batch" else nn.GroupNorm(8, channels, affine=True)

        previous = in_nc
        for stage, width in enumerate(widths):
            # Stage 0's first convolution has a bias and no normalisation; every other one is normalised.
            setattr(self, f"conv{stage}_0", nn.Conv2d(previous, width, 3, 1, 1, bias=stage == 0))
            if stage:
                setattr(self, f"bn{stage}_0", normalise(width))
            setattr(self, f"conv{stage}_1", nn.Conv2d(width, width, 4, 2, 1, bias=False))
            setattr(self, f"bn{stage}_1", normalise(width))
            previous = width
        self.stages = len(widths)
        cells = image_size // 2 ** self.stages
        self.linear1 = nn.Linear(widths[-1] * cells * cells, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        for stage in range(self.stages):
            x = getattr(self, f"conv{stage}_0")(x)
            x = self.lrelu(getattr(self, f"bn{stage}_0")(x) if stage else x)
            x = self.lrelu(getattr(self, f"bn{stage}_1")(getattr(self, f"conv{stage}_1")(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.do_checkpointing and self.training and torch.is_grad_enabled():
            features = checkpoint(self.body, x, use_reentrant=False)
        else:
            features = self.body(x)
        return self.linear2(self.lrelu(self.linear1(features.flatten(1))))


def _build(norm: str):
    def build(opt_net: Dict[str, Any], opt: Dict[str, Any]) -> VGGDiscriminator:
        size, multiple = opt_net.get("image_size", 128), crop_multiple(opt_net.get("extra_conv", False))
        if size % multiple:
            raise ConfigError(f"discriminator `image_size` {size} must be a multiple of {multiple} (it halves the "
                              f"crop {HALVINGS + int(opt_net.get('extra_conv', False))} times)")
        return VGGDiscriminator(in_nc=opt_net.get("in_nc", 3), nf=opt_net.get("nf", 64), image_size=size, norm=norm,
                                extra_conv=opt_net.get("extra_conv", False),
                                do_checkpointing=opt_net.get("do_checkpointing", False))
    return build


DISCRIMINATORS.register("discriminator_vgg_128", keys=KEYS)(_build("batch"))
DISCRIMINATORS.register("discriminator_vgg_128_gn", keys=KEYS)(_build("group"))


def _crop_side(opt: Dict[str, Any], key: str) -> Optional[tuple]:
    """(side, what sets it) of the square images under state key `key`, when the recipe says so."""
    if key == "hq":
        return opt["datasets"].get("train", {}).get("target_size"), "datasets.train.target_size"
    for step_name, step in opt["steps"].items():
        for name, inj in step["injectors"].items():
            if inj.get("type") == "image_patch" and inj.get("out") == key:
                sizer = "resize" if inj.get("resize") else "patch_size"
                return inj[sizer], f"steps.{step_name}.injectors.{name}.{sizer}"
    return None


@recipe_rule(order=50)
def check_crop_sizes(opt: Dict[str, Any]) -> List[str]:
    """A VGG discriminator is given crops of its `image_size`, else its linear layer cannot
    take them."""
    problems = []
    for step_name, step in opt["steps"].items():
        for loss_name, loss in step["losses"].items():
            if loss.get("type") not in ("discriminator_gan", "generator_gan"):
                continue
            d_name = loss.get("discriminator") or as_list(step["training"])[0]
            net = opt["networks"].get(d_name) or {}
            if net.get("type") != "discriminator":
                continue
            size = net.get("image_size", 128)
            for side in ("real", "fake"):
                for key in as_list(loss.get(side)):
                    found = _crop_side(opt, key)
                    if found and found[0] is not None and found[0] != size:
                        problems.append(
                            f"`networks.{d_name}.image_size` is {size} ({net['which_model_D']} judges {size}x{size} "
                            f"crops), but `steps.{step_name}.losses.{loss_name}.{side}` (`{key}`) is {found[0]}x"
                            f"{found[0]} ({found[1]}): make them equal")
    return problems

