"""A photo super-resolved by a trained network beside the bicubic enlargement of the same LR, both scored.

The LR is made as the project's data pipeline makes it (data/full_image_dataset.py): the HQ photo cut to a
multiple of the scale at its bottom and right, shrunk by MATLAB-exact bicubic and clipped to [0, 1]; the
bicubic baseline is the MATLAB-exact bicubic enlargement of that LR.
"""
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import nn

from data.imresize import imresize
from inference.images import resample
from inference.sr import super_resolve
from utils.image import img2tensor, to_uint8
from utils.metrics import psnr_y


class Versus(NamedTuple):
    size: Tuple[int, int]  # (height, width) of the HQ photo scored, cut to a multiple of the scale
    psnr_bicubic: float  # Y-PSNR (dB) against HQ, border cropped
    psnr_sr: float


def make_lr(hq: np.ndarray, scale: int) -> Tuple[np.ndarray, np.ndarray]:
    """float RGB HxWx3 in [0, 1] -> (hq cut to a multiple of scale, its MATLAB-bicubic LR in [0, 1])."""
    hq = np.ascontiguousarray(hq[:hq.shape[0] - hq.shape[0] % scale, :hq.shape[1] - hq.shape[1] % scale])
    return hq, resample(hq, 1 / scale)


def bicubic_up(lq: torch.Tensor, scale: int) -> np.ndarray:
    """The baseline: a float 3xhxw LR tensor enlarged by MATLAB-exact bicubic, as uint8 RGB."""
    return to_uint8(imresize(lq.cpu(), scale=scale).clamp(0, 1))


def sr_image(net: nn.Module, lq: torch.Tensor, device: torch.device, temperature: Optional[float] = None,
             name: str = "image", lr_enc: Optional[tuple] = None) -> np.ndarray:
    """`net`'s SR (SRFlow's at `temperature`, default 0) of a float 3xhxw LR tensor, as uint8 RGB; `lr_enc`
    (inference.sr.conditioning of the same LR) reuses an RRDB pass."""
    sr = super_resolve(net, lq[None].to(device), temperature or 0.0, name=name, lr_enc=lr_enc).image
    return to_uint8(sr[0].cpu())


def versus_bicubic(net: nn.Module, hq: np.ndarray, scale: int, crop_border: int,
                   device: torch.device = torch.device("cpu"), name: str = "image") -> Versus:
    """The Y-PSNRs of `net`'s SR of a float RGB photo in [0, 1] and of bicubic."""
    hq, lq = make_lr(hq, scale)
    lq_tensor, target = img2tensor(lq), to_uint8(hq)
    sr = sr_image(net, lq_tensor, device, name=name)
    return Versus(hq.shape[:2], psnr_y(bicubic_up(lq_tensor, scale), target, crop_border),
                  psnr_y(sr, target, crop_border))
