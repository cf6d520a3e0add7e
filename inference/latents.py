"""Operations on SRFlow latents, each a list [split eps of level 1, ..., z] as `encode` returns it."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

Latents = List[torch.Tensor]

# How `normalize_for_restore` normalises: DLAS's two steps (its default), its first step alone, or the
# SRFlow paper's global normalisation.
RESTORE_NORMS = ("spatial-local", "spatial", "global")


def _standardize(x: torch.Tensor, dims: Tuple[int, ...]) -> torch.Tensor:
    """(x - mean) / std over `dims`, the std unbiased (torch.std's default), as DLAS computes it. Where the
    values do not vary (std 0, or NaN for a single value) they are only centred: a division by zero is the
    one case guarded, so every other result is exactly DLAS's."""
    std = x.std(dims, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # NaN > 0 is False as well
    return (x - x.mean(dims, keepdim=True)) / std


def normalize_for_restore(latents: Sequence[torch.Tensor], how: str = "spatial-local") -> Latents:
    """The SRFlow paper's restoration: a degraded image's latents carry the degradation as statistics
    that real images' latents do not have; normalising removes them, so decoding gives a nearby clean image.

    `spatial-local` (DLAS's `local_norm(spatial_norm(z))`): each latent per channel over its positions,
    then at each position across its channels. `spatial`: the first step alone. `global` (the paper's
    global normalisation, official SRFlow issue #27): one mean and std per image over every element of
    every latent, all levels together.
    """
    if how not in RESTORE_NORMS:
        raise ValueError(f"unknown restore normalisation `{how}`; known: {', '.join(RESTORE_NORMS)}")
    if how == "global":
        flat = torch.cat([z.flatten(1) for z in latents], dim=1)
        mean, std = flat.mean(1), flat.std(1)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return [(z - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1) for z in latents]
    out = []
    for z in latents:
        z = _standardize(z, (2, 3))
        out.append(z if how == "spatial" else _standardize(z, (1,)))
    return out


def center_crop(ref: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """The centre of a reference latent, cut to `shape`'s height and width; ValueError if it is smaller."""
    (h, w), (rh, rw) = shape[-2:], ref.shape[-2:]
    if rh < h or rw < w:
        raise ValueError(f"its latents are {rh}x{rw}, smaller than the image's {h}x{w}; use a larger reference")
    top, left = (rh - h) // 2, (rw - w) // 2
    return ref[..., top:top + h, left:left + w]


def strip_fractions(steps: int) -> List[float]:
    """What each frame of DLAS's interpolation strip keeps of the latents it starts from: frame k of
    `steps` (>= 2) decodes latents * (1 - k / (steps - 1)), so the first frame is the latents themselves
    and the last one zeros, the mean image (`create_interpolation_video`: both ends, evenly spaced)."""
    return [1 - k / (steps - 1) for k in range(steps)]


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
