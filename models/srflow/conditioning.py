"""The flow's conditioning features, kept in parts, and the 3x3 convolution that reads them."""
import functools
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F


class Conditioning(NamedTuple):
    """Conditioning of one flow level: `fea` at the level's size and, with stackRRDB.concat, `stack`
    (the chosen RRDB blocks' outputs concatenated) at LR size. The official code feeds
    cat[fea, nearest_resize(stack, fea's size)]; keeping the parts apart lets the convolutions that
    read it skip building that large tensor (see `conv3x3`)."""
    fea: torch.Tensor
    stack: Optional[torch.Tensor] = None

    def full(self) -> torch.Tensor:
        if self.stack is None:
            return self.fea
        return torch.cat([self.fea, F.interpolate(self.stack, size=self.fea.shape[-2:])], dim=1)


@functools.lru_cache(maxsize=None)
def _phase_layout(f: int) -> Tuple[torch.Tensor, Tuple[Tuple[int, int, int, int], ...]]:
    """How 3x3 kernel taps land on the LR pixels read by each output phase (py, px) of an f-times
    nearest upsampling: a 0/1 matrix (9, sum of phase kernel sizes) and, per phase in row-major order,
    (first LR row, first LR column in padded coordinates, kernel height, kernel width).

    Phase p reads HR offsets p-1, p, p+1 of the upsampled map, i.e. LR offsets (p-1+k)//f: one or two
    neighbours, so its kernel is 2x2, 2x1, 1x2 or 1x1.
    """
    groups = []  # per phase p: for each LR offset it reads, the kernel indices summed onto it
    for p in range(f):
        offsets = [(p - 1 + k) // f for k in range(3)]
        groups.append([[k for k in range(3) if offsets[k] == off] for off in sorted(set(offsets))])
    columns, layout = [], []
    for py in range(f):
        for px in range(f):
            for rows in groups[py]:
                for cols in groups[px]:
                    columns.append([1.0 if ky in rows and kx in cols else 0.0 for ky in range(3) for kx in range(3)])
            layout.append(((py - 1) // f + 1, (px - 1) // f + 1, len(groups[py]), len(groups[px])))
    return torch.tensor(columns).t().contiguous(), tuple(layout)


class _AddPhases(torch.autograd.Function):
    """In place: out[..., y*f + py, x*f + px] += phases[py*f + px][..., y, x].

    Written as four strided adds; its backward hands each phase the matching strided view of the
    gradient. (Autograd's own handling of in-place writes into views clones the whole gradient per
    write, and an out-of-place interleave runs an unvectorisable inner loop of length f.)
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, f: int, *phases: torch.Tensor) -> torch.Tensor:
        ctx.f = f
        ctx.mark_dirty(out)
        for k, phase in enumerate(phases):
            _grid(out, f)[:, :, :, k // f, :, k % f] += phase
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f = ctx.f
        grid = _grid(grad, f)
        return (grad, None, *(grid[:, :, :, k // f, :, k % f] for k in range(f * f)))


def _grid(x: torch.Tensor, f: int) -> torch.Tensor:
    """(b, c, h*f, w*f) viewed as (b, c, h, f, w, f); a copy only if x's strides allow no such view."""
    b, c, hh, ww = x.shape
    return x.reshape(b, c, hh // f, f, ww // f, f)


def add_conv3x3_nearest_up(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, f: int) -> torch.Tensor:
    """out + conv3x3(nearest_upsample(x, f), weight, padding 1), the convolution computed at x's size;
    `out` (a fresh tensor, not read by any backward) is updated in place.

    Output phase (py, px) is a convolution of x with the 3x3 taps summed onto the one or two LR pixels
    each phase reads: 2.25x (f=2) to 4x (f=4) fewer operations than at HR size, and no upsampled map.
    """
    b, _, h, w = x.shape
    o, i = weight.shape[:2]
    taps, layout = _phase_layout(f)
    kernels = (weight.reshape(o * i, 9) @ taps.to(weight)).view(o, i, -1)  # all phases' taps, one GEMM
    kernels = kernels.split([ny * nx for _, _, ny, nx in layout], dim=2)
    padded = F.pad(x, (1, 1, 1, 1))
    phases = [F.conv2d(padded[:, :, y0:y0 + h + ny - 1, x0:x0 + w + nx - 1], kernel.reshape(o, i, ny, nx))
              for (y0, x0, ny, nx), kernel in zip(layout, kernels)]
    return _AddPhases.apply(out, f, *phases)


def conv3x3(cond: Union[torch.Tensor, Conditioning], weights: Sequence[torch.Tensor],
            bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """conv2d(full conditioning, cat(weights), bias, padding=1), one part of the conditioning at a time."""
    if isinstance(cond, torch.Tensor):
        return F.conv2d(cond, torch.cat(list(weights)), bias, padding=1)
    nf = cond.fea.shape[1]
    parts = [w.split([nf, w.shape[1] - nf], dim=1) for w in weights]  # split: a cheap backward
    out = F.conv2d(cond.fea, torch.cat([p[0] for p in parts]), bias, padding=1)
    if cond.stack is None:
        return out
    w_stack = torch.cat([p[1] for p in parts])
    (hh, ww), (h, w) = cond.fea.shape[-2:], cond.stack.shape[-2:]
    if (hh, ww) == (h, w):
        return out + F.conv2d(cond.stack, w_stack, padding=1)
    f = hh // h
    # Beyond f=2 and below 16x16 LR pixels, the f*f small convolutions cost more than they save.
    if f >= 2 and (hh, ww) == (h * f, w * f) and (f == 2 or h * w >= 256):
        return add_conv3x3_nearest_up(out, cond.stack, w_stack, f)
    return out + F.conv2d(F.interpolate(cond.stack, size=(hh, ww)), w_stack, padding=1)
