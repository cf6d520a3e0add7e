"""Super-resolving one image with RRDB or SRFlow: padding to the net's multiple, overlapping tiles, and
decoding that checks for diverged pixels, retries at lower temperatures and, if even t=0 fails, fills
them in from bicubic.

SRFlow "has a knack for producing NaNs in the reverse direction" on latents far from its training data;
every SR image made here goes through `super_resolve`, so none is written with such pixels unannounced.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from data.imresize import imresize
from models import is_flow, lr_multiple  # noqa: F401  (lr_multiple: also this module's API)

FALLBACK = (0.75, 0.5, 0.25, 0.0)  # fractions of the temperature retried, in order, after diverged pixels
# A value beyond this magnitude is a diverged one, like a non-finite one: images live in [0, 1], and a reverse
# flow that blows up gives values like 1e18 long before it gives inf (clamping them would hide garbage),
# while an undertrained model's overshoot stays far below it.
BLOWN_UP = 100.0
Report = Callable[[str], None]


class SRResult(NamedTuple):
    image: torch.Tensor  # 1x3xHxW in [0, 1], finite
    temperature: Optional[float]  # the temperature used in the end (None for a plain SR net)
    diverged: int  # diverged values whose pixels were filled in from bicubic (0 unless every retry failed)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom and right to multiples of `multiple`: by reflection, or edge copies for tiny images."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if ph == pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def encode(net: nn.Module, hq: torch.Tensor, lq: torch.Tensor) -> List[torch.Tensor]:
    """SRFlow latents of an HQ image given its LR: [split eps of level 1, ..., z]."""
    with torch.no_grad():
        epses, _, _ = net(gt=hq, lr=lq, z=None, eps_std=None, reverse=False, epses=[], add_gt_noise=False)
    return epses


def conditioning(net: nn.Module, lq: torch.Tensor) -> Optional[tuple]:
    """SRFlow's RRDB pass over `lq`, padded as `super_resolve` pads it (None for other networks). Pass it
    as `lr_enc` to decode the same image several times (temperatures, samples, latents) with one pass."""
    if not is_flow(net):
        return None
    with torch.no_grad():
        return net.rrdb_preprocessing(pad_to_multiple(lq, lr_multiple(net)))


def forward(net: nn.Module, lq: torch.Tensor, temperature: Optional[float],
            latents: Optional[Sequence[torch.Tensor]] = None,
            lr_enc: Optional[tuple] = None) -> Tuple[torch.Tensor, int]:
    """One pass: the SR image and how many diverged values (non-finite or beyond BLOWN_UP) the network
    made. Their pixels are filled in from the bicubic upscaling of `lq`, the one stand-in always sensible.

    SRFlow's decode returns what the flow computed, diverged values included: this module alone decides
    what to do about them (detect, retry at lower temperatures, fill in, count).
    """
    if not is_flow(net):
        sr = net(lq).float()  # bf16 under autocast; SRFlow's decode gives float32 by itself
        return _fill_diverged(sr, diverged(sr), lq)
    # at t=0 the scaled latents are zeros: the prior's mean, also for latents that are not finite
    epses = [z * temperature for z in latents] if latents is not None and temperature else []
    sr = net(lr=lq, z=None, eps_std=temperature, reverse=True, epses=epses, lr_enc=lr_enc, add_gt_noise=False)[0]
    return _fill_diverged(sr, diverged(sr), lq)


def diverged(x: torch.Tensor) -> torch.Tensor:
    """Mask of the values of an SR image that are not finite or beyond +-BLOWN_UP."""
    return ~torch.isfinite(x) | (x.abs() > BLOWN_UP)


def _fill_diverged(sr: torch.Tensor, bad: torch.Tensor, lq: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """(sr with every pixel holding a bad value taken whole from bicubic, how many values were bad)."""
    count = int(bad.sum())
    if count:
        bicubic = imresize(lq, scale=sr.shape[-1] // lq.shape[-1]).clamp(0, 1).to(sr)
        sr = torch.where(bad.any(dim=1, keepdim=True), bicubic, sr)  # whole pixels: no colour casts
    return sr, count


def _starts(length: int, tile: int, overlap: int) -> List[int]:
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def _ramp(length: int, width: int) -> torch.Tensor:
    """Blending weight along one side of a tile: rises linearly over `width` pixels from each edge."""
    i = torch.arange(length, dtype=torch.float32)
    return (torch.minimum(i + 1, length - i) / max(width, 1)).clamp(max=1)


def _coverage(starts: List[int], ramp: torch.Tensor, scale: int, length: int) -> torch.Tensor:
    """The blending weights of every tile along one side, summed: what each output row (or column) is
    divided by."""
    total = ramp.new_zeros(length)
    for start in starts:
        total[start * scale:start * scale + ramp.numel()] += ramp
    return total


def tiled(net: nn.Module, lq: torch.Tensor, temperature: Optional[float], tile: int,
          overlap: int) -> Tuple[torch.Tensor, int]:
    """`forward` on overlapping LR tiles of side `tile` (multiples of the net's multiple, as `lq`'s sides
    are), blended with weights that fall off towards each tile's edges so that no seam shows. At t > 0
    each tile draws its own latents, so an overlap blends two samples.

    Memory: apart from one tile's pass, only the output itself is full size. Every tile of a row has the
    same height and of a column the same width, so the summed blending weights are a column times a row
    (no full-size weight map), and the output is blended and normalised in place.
    """
    h, w = lq.shape[-2:]
    overlap = min(overlap, tile // 2)
    rows, cols = _starts(h, tile, overlap), _starts(w, tile, overlap)
    out = mask = None
    bad = 0
    for y in rows:
        for x in cols:
            part = lq[..., y:y + tile, x:x + tile]
            # the conditioning alone: decode's own RRDB pass would also make the RRDB's HR image, unused here
            sr, n = forward(net, part, temperature, lr_enc=conditioning(net, part))
            bad += n
            s = sr.shape[-1] // part.shape[-1]
            if out is None:
                out = sr.new_zeros(*sr.shape[:2], h * s, w * s)
                ramp_y, ramp_x = (_ramp(side, overlap * s).to(sr) for side in sr.shape[-2:])
                mask = ramp_y[:, None] * ramp_x
            out[..., y * s:y * s + sr.shape[-2], x * s:x * s + sr.shape[-1]].addcmul_(sr, mask)
    out.div_(_coverage(rows, ramp_y, s, h * s)[:, None]).div_(_coverage(cols, ramp_x, s, w * s))
    return out, bad


def temperatures(temperature: float) -> List[float]:
    """The temperature, then the FALLBACK steps below it."""
    return [temperature] + [temperature * f for f in FALLBACK if temperature * f < temperature]


def super_resolve(net: nn.Module, lq: torch.Tensor, temperature: float = 0.0,
                  latents: Optional[Sequence[torch.Tensor]] = None, tile: int = 0, overlap: int = 16,
                  name: str = "image", report: Report = print, lr_enc: Optional[tuple] = None) -> SRResult:
    """SR of one LR image (1x3xhxw in [0, 1]) -> 1x3x(s*h)x(s*w) in [0, 1].

    The LR is padded to the net's multiple and the result cropped back. SRFlow draws its latents at
    `temperature`, or decodes `latents` (as `encode` returns them, for the padded size) scaled by it.
    Non-finite pixels are reported with their count and temperature, and the image is made again at the
    FALLBACK temperatures below it until it is finite; if even t=0 fails, that is said too.
    `tile` > 0 runs LR tiles of about that side, overlapping by `overlap` LR pixels.
    `lr_enc` (from `conditioning(net, lq)`) reuses an RRDB pass; without tiles, the retries share one anyway.
    """
    h, w = lq.shape[-2:]
    multiple = lr_multiple(net)
    x = pad_to_multiple(lq, multiple)
    if tile and latents is not None:
        raise ValueError("tiling draws latents per tile; it cannot decode given latents")
    tile = max(multiple, tile - tile % multiple) if tile > 0 else 0
    use_tiles = 0 < tile < max(x.shape[-2:])
    if use_tiles and lr_enc is not None:
        raise ValueError("tiles get their own RRDB pass; pass lr_enc only without tiling")
    if not use_tiles and lr_enc is None:
        lr_enc = conditioning(net, x)
    candidates: List[Optional[float]] = temperatures(float(temperature)) if is_flow(net) else [None]
    for i, t in enumerate(candidates):
        with torch.no_grad():
            sr, bad = tiled(net, x, t, tile, overlap) if use_tiles else forward(net, x, t, latents, lr_enc)
        at = "" if t is None else f" at t={t:g}"
        if bad == 0:
            if i:
                report(f"{name}: no diverged values{at}, which is used instead of t={temperature:g}")
            break
        if i + 1 < len(candidates):
            report(f"{name}: {bad} diverged pixel values{at} (non-finite or beyond +-{BLOWN_UP:g}); "
                   f"retrying at t={candidates[i + 1]:g}")
            del sr  # freed before the next try is made, not after
        else:
            report(f"{name}: {bad} diverged pixel values{at} (non-finite or beyond +-{BLOWN_UP:g}), the last "
                   f"try; their pixels are filled in from the bicubic upscaling")
    s = sr.shape[-1] // x.shape[-1]
    # in place: the image is this function's own, and a large one should not exist twice
    sr = sr.clamp_(0, 1)[..., :h * s, :w * s].contiguous()
    return SRResult(sr, t, bad)
