"""Which memory layout the networks compute in: channels_last where the convolution libraries are faster on it.

On the CPU, oneDNN's convolutions run up to 1.6x faster on channels_last (NHWC) tensors than on NCHW
ones; SRFlow's decode gains 1.1-1.2x, its training a few percent (scripts/bench_srflow.py --channels-last
on/off compares). On CUDA, cuDNN's fast fp16/bf16 kernels are NHWC ones, so there it is used under
autocast only (not measured here: no GPU). Inputs are converted where a network starts, and outputs are
handed back contiguous. On the CPU, a network that opts in (`weights_to_compute_format`) also stores its
convolution weights channels_last: oneDNN otherwise copies every weight into that layout on every call,
forward and backward. Elsewhere parameters keep their layout.
"""
from typing import Optional

import torch


def use_channels_last(x: torch.Tensor, setting: Optional[bool] = None) -> bool:
    """`setting` (a recipe's `channels_last`) when given; else True on the CPU and under CUDA autocast."""
    if setting is not None:
        return setting
    return x.device.type == "cpu" or (x.device.type == "cuda" and torch.is_autocast_enabled())  # CUDA's autocast


def to_compute_format(x: torch.Tensor, setting: Optional[bool] = None) -> torch.Tensor:
    """`x` in the layout the convolutions that read it are fastest in (a no-op when it already is)."""
    if x.dim() != 4 or not use_channels_last(x, setting):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def weights_to_compute_format(module: torch.nn.Module, x: torch.Tensor, setting: Optional[bool] = None) -> None:
    """On the CPU, stores `module`'s 4-D parameters in the layout its convolutions compute in for input `x`
    (and back, if that layout changed): the same values, without a weight copy per convolution call. Their
    gradients and optimizer state follow the parameter's layout. Elsewhere (CUDA: not measured; a weight's
    layout also steers cuDNN's) and while compiling, nothing changes."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return
    layout = torch.channels_last if use_channels_last(x, setting) else torch.contiguous_format
    for p in module.parameters():
        if p.dim() == 4 and p.device.type == "cpu" and not p.is_contiguous(memory_format=layout):
            p.data = p.data.contiguous(memory_format=layout)
