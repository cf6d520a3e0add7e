"""ONNX graphs of a trained network: LR image -> SR image (the RRDB's result, or SRFlow's mean image at t = 0), or
SRFlow's sampling graph, which also takes its latents and the temperature. Height and width are dynamic."""
import inspect
import warnings
from fractions import Fraction
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models import is_flow, lr_multiple
from models.srflow.split import Split2d
from utils.files import atomic_path

OPSET = 17
# The TorchScript exporter traces SRFlow with H and W symbolic; torch.export (dynamo=True, torch >= 2.5's other
# exporter) fails on SRFlow's flow. Torch before 2.5 has only the TorchScript one, and no `dynamo` argument.
TORCHSCRIPT_EXPORTER = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


class MeanImage(nn.Module):
    """SRFlow at temperature 0: every latent at the prior's mean. An LR side that is not a multiple of
    lr_multiple is padded by reflection and the result cropped back, as test.py does (inference/sr.py)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.multiple = lr_multiple(net)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        m = self.multiple
        padded = F.pad(lr, (0, (m - w % m) % m, 0, (m - h % m) % m), mode="reflect")
        sr = self.net(lr=padded, z=None, eps_std=0.0, reverse=True, add_gt_noise=False)[0]
        return sr[:, :, :h * self.net.hr_factor, :w * self.net.hr_factor]


class Sampling(nn.Module):
    """SRFlow decoding given latents: standard-normal tensors, scaled by the temperature inside the graph."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, lr: torch.Tensor, temperature: torch.Tensor, *latents: torch.Tensor) -> torch.Tensor:
        epses = [z * temperature for z in latents]
        return self.net(lr=lr, reverse=True, epses=epses, add_gt_noise=False)[0]


def latent_shapes(net: nn.Module, lr_shape: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    """The shapes of SRFlow's latents for an LR batch (N, 3, h, w): each split's eps (level 1 first), then z."""
    n, _, h, w = lr_shape
    hr_h, hr_w = h * net.hr_factor, w * net.hr_factor
    flow = net.flowUpsamplerNet
    shapes = [(n, layer.num_channels_consume, hr_h >> level, hr_w >> level)
              for layer, level in zip(flow.layers, flow.level_of) if isinstance(layer, Split2d)]
    return shapes + [net.z_shape(lr_shape)]


def latent_names(net: nn.Module) -> List[str]:
    flow = net.flowUpsamplerNet
    levels = [level for layer, level in zip(flow.layers, flow.level_of) if isinstance(layer, Split2d)]
    return [f"eps_level{level}" for level in levels] + ["z"]


def times(ratio: Fraction, side: str) -> str:
    """'2h', 'h/2', '3h/4'."""
    top = "" if ratio.numerator == 1 else str(ratio.numerator)
    return f"{top}{side}" + ("" if ratio.denominator == 1 else f"/{ratio.denominator}")


def describe_inputs(net: nn.Module, sampling: bool) -> str:
    """The graph's inputs, with their shapes for an LR image of h x w, for the user."""
    if not is_flow(net):
        f = net.scale // net.conv_first.stride[0]
        return f"lr: N x 3 x h x w (float32, 0-1) -> sr: N x 3 x {f}h x {f}w"
    m = lr_multiple(net)
    text = f"lr: N x 3 x h x w (float32, 0-1{f'; h and w multiples of {m}' if sampling else ''})"
    if sampling:
        f = net.hr_factor
        parts = []
        for name, (_, c, hh, ww) in zip(latent_names(net), latent_shapes(net, (1, 3, 2 ** 10 * m, 2 ** 10 * m))):
            ratio = Fraction(hh, 2 ** 10 * m)  # the latent's side over the LR side
            parts.append(f"{name}: N x {c} x {times(ratio, 'h')} x {times(ratio, 'w')}")
        text += "; temperature: a float32 scalar; " + "; ".join(parts) + " (standard normal)"
    return text + f" -> sr: N x 3 x {net.hr_factor}h x {net.hr_factor}w"


def example_inputs(net: nn.Module, sampling: bool, size: int = 16) -> Tuple[torch.Tensor, ...]:
    """Inputs to trace the graph with (any size works afterwards)."""
    side = size * (lr_multiple(net) if is_flow(net) else 1)
    lr = torch.rand(1, 3, side, side)
    if not sampling:
        return (lr,)
    return (lr, torch.tensor(0.8)) + tuple(torch.randn(s) for s in latent_shapes(net, lr.shape))


def graph_module(net: nn.Module, sampling: bool) -> nn.Module:
    if not is_flow(net):
        return net
    return Sampling(net) if sampling else MeanImage(net)


def export_onnx(net: nn.Module, output: Path, sampling: bool = False) -> List[str]:
    """Write the ONNX graph of `net` (eval mode, CPU) to `output`; returns its input names."""
    net = net.eval().cpu()
    module = graph_module(net, sampling)
    inputs = example_inputs(net, sampling)
    names = ["lr"] + (["temperature"] + latent_names(net) if sampling else [])
    dynamic = {name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in names if name != "temperature"}
    dynamic["sr"] = {0: "batch", 2: "sr_height", 3: "sr_width"}
    with atomic_path(output) as tmp, torch.no_grad(), warnings.catch_warnings():
        # the size checks (HR side a multiple of 2**L, ...) are Python booleans: traced as constants, harmless
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
        module(*inputs)  # fills the 1x1 convs' inverse cache, so the graph holds W^-1 as constants
        torch.onnx.export(module, inputs, str(tmp), input_names=names, output_names=["sr"], dynamic_axes=dynamic,
                          opset_version=OPSET, **TORCHSCRIPT_EXPORTER)
    return names
