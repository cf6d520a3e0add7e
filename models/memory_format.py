"""Which memory layout the networks compute in: channels_last where the convolution libraries are faster on it.

On the CPU, oneDNN's convolutions run up to 1.6x faster on channels_last (NHWC) tensors than on NCHW
ones; SRFlow's decode gains 1.1-1.2x, its training a few percent (scripts/bench_srflow.py --channels-last
on/off compares). On CUDA, cuDNN's fast fp16/bf16 kernels are NHWC ones, so there it is used under
autocast only (not measured here: no GPU). Inputs are converted where a network starts, and outputs are
handed back contiguous. On the CPU, a network that opts in (`weights_to_compute_format`) also stores its
convolution weights channels_last: oneDNN otherwise copies every weight into that layout on every call,
forward and backward. Elsewhere parameters are contiguous.
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


def weights_to_compute_format(module: torch.nn.Module, setting: Optional[bool] = None) -> None:
    """Stores `module`'s 4-D parameters channels_last where they are on the CPU and `setting` (the recipe's
    `channels_last`) is not False, contiguous elsewhere: the same values, without a weight copy per
    convolution call on the CPU. Gradients and optimizer state follow a parameter's layout. (On CUDA not
    measured, and a weight's layout also steers cuDNN's choice of kernels: contiguous, as built.)"""
    for p in module.parameters():
        cpu_last = p.device.type == "cpu" and setting is not False
        layout = torch.channels_last if cpu_last else torch.contiguous_format
        if p.dim() == 4 and not p.is_contiguous(memory_format=layout):
            p.data = p.data.contiguous(memory_format=layout)
