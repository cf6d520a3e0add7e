"""Operations on SRFlow latents, each a list [split eps of level 1, ..., z] as `encode` returns it."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

Latents = List[torch.Tensor]


def normalize_for_restore(latents: Sequence[torch.Tensor], eps: float = 1e-6) -> Latents:
    """The SRFlow paper's restoration: each latent normalised per channel over its positions, then at each
    position across its channels. A degraded image's latents carry the degradation as statistics that
    real images do not have; normalising removes them, so decoding gives a nearby clean image."""
    out = []
    for z in latents:
        z = (z - z.mean((2, 3), keepdim=True)) / z.std((2, 3), correction=0, keepdim=True).clamp_min(eps)
        z = (z - z.mean(1, keepdim=True)) / z.std(1, correction=0, keepdim=True).clamp_min(eps)
        out.append(z)
    return out


def center_crop(ref: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """The centre of a reference latent, cut to `shape`'s height and width; ValueError if it is smaller."""
    (h, w), (rh, rw) = shape[-2:], ref.shape[-2:]
    if rh < h or rw < w:
        raise ValueError(f"its latents are {rh}x{rw}, smaller than the image's {h}x{w}; use a larger reference")
    top, left = (rh - h) // 2, (rw - w) // 2
    return ref[..., top:top + h, left:left + w]


def lerp(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], p: float) -> Latents:
    """Linear interpolation: a at p=0, b at p=1."""
    return [(1 - p) * x + p * y for x, y in zip(a, b)]


def slerp(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], p: float) -> Latents:
    """Spherical interpolation of each latent, as one vector per image, which keeps the norm a gaussian
    sample has (a linear mix of two samples is shorter than either); linear where they are parallel."""
    out = []
    for x, y in zip(a, b):
        cos = F.cosine_similarity(x.flatten(1), y.flatten(1), dim=1).clamp(-1, 1)
        omega = torch.acos(cos).view(-1, 1, 1, 1)
        so = torch.sin(omega)
        parallel = so < 1e-6
        so = torch.where(parallel, torch.ones_like(so), so)
        curved = torch.sin((1 - p) * omega) / so * x + torch.sin(p * omega) / so * y
        out.append(torch.where(parallel, (1 - p) * x + p * y, curved))
    return out
