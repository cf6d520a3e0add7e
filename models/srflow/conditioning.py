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


Features = Union[torch.Tensor, Conditioning]  # a level's conditioning, whole or in parts


def autocast_dtype_on(device: torch.device) -> Optional[torch.dtype]:
    """The dtype autocast computes convolutions in on `device` now, or None outside autocast."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        enabled = torch.is_autocast_enabled(device.type)
        return torch.get_autocast_dtype(device.type) if enabled else None
    if device.type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def cast_once_for_autocast(cond: Features) -> Features:
    """Under autocast, the conditioning in the dtype its convolutions compute in: autocast would cast it anew for
    each of the level's couplings (K casts of the largest maps the flow reads, memory-bound; the same values).
    Not where the conditioning needs a gradient: its couplings' gradients would then add up in that dtype."""
    tensors = [cond] if isinstance(cond, torch.Tensor) else [t for t in cond if t is not None]
    if not tensors or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return cond
    dtype = autocast_dtype_on(tensors[0].device)
    if dtype is None or not tensors[0].is_floating_point():
        return cond
    if isinstance(cond, torch.Tensor):
        return cond.to(dtype)
    return Conditioning(*(None if t is None else t.to(dtype) for t in cond))


@functools.lru_cache(maxsize=None)
def _phase_layout(f: int) -> Tuple[torch.Tensor, Tuple[Tuple[int, int], ...]]:
    """How the 3x3 taps of a convolution of an f-times nearest upsampling land on LR pixels, per output
    phase (py, px) in row-major order: a 0/1 matrix (9, f*f*4) that maps the 3x3 taps onto each phase's
    2x2 kernel, and each phase's (first LR row, first LR column) relative to the output pixel.

    Phase p reads HR offsets p-1, p, p+1, i.e. LR offsets (p-1+k)//f: {-1, 0}, {0} or {0, 1}, always
    inside a 2-pixel window starting at -1 or 0 (for f=2 every tap of the window is used).
    """
    starts = [-1 if (p - 1) // f < 0 else 0 for p in range(f)]
    columns, layout = [], []
    for py in range(f):
        for px in range(f):
            for a in range(2):
                for b in range(2):
                    columns.append([1.0 if (py - 1 + ky) // f - starts[py] == a and (px - 1 + kx) // f - starts[px] == b
                                    else 0.0 for ky in range(3) for kx in range(3)])
            layout.append((starts[py], starts[px]))
    return torch.tensor(columns).t().contiguous(), tuple(layout)


class _AddPhases(torch.autograd.Function):
    """In place: out[..., y*f + py, x*f + px] += phases[k][..., y + 1 + sy, x + 1 + sx] for phase
    k = py*f + px (channels k*o to (k+1)*o of `phases`) with window start (sy, sx).

    Written as f*f strided adds; the backward writes each phase's strided view of the gradient into one
    gradient for `phases`. (Autograd's own handling of in-place writes into views clones the whole
    gradient per write, and an out-of-place interleave runs an unvectorisable inner loop of length f.)
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, phases: torch.Tensor, f: int, starts: Tuple[Tuple[int, int], ...]):
        ctx.f, ctx.starts, ctx.phases_shape = f, starts, phases.shape
        ctx.layout = torch.channels_last if phases.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format  # the convolution's backward reads its gradient fastest in it
        ctx.mark_dirty(out)
        for grid, window in _pairs(out, phases, f, starts):
            grid += window
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_phases = torch.empty(ctx.phases_shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
        o = grad.shape[1]
        for k, (grid, window) in enumerate(_pairs(grad, grad_phases, ctx.f, ctx.starts)):
            window.copy_(grid)
            sy, sx = ctx.starts[k]  # the row and column of the phase's map outside its window
            grad_phases[:, k * o:(k + 1) * o, -1 if sy else 0].zero_()
            grad_phases[:, k * o:(k + 1) * o, :, -1 if sx else 0].zero_()
        return grad, grad_phases, None, None


def _pairs(hr: torch.Tensor, phases: torch.Tensor, f: int, starts: Tuple[Tuple[int, int], ...]):
    """(strided view of `hr` of phase k, the matching window of `phases`) for each phase k. Splitting H
    and W is a view for any strides, so these are views of `hr` and `phases` themselves."""
    b, o, hh, ww = hr.shape
    h, w = hh // f, ww // f
    grid = hr.view(b, o, h, f, w, f)
    for k, (sy, sx) in enumerate(starts):
        window = phases[:, k * o:(k + 1) * o, sy + 1:sy + 1 + h, sx + 1:sx + 1 + w]
        yield grid[:, :, :, k // f, :, k % f], window


def add_conv3x3_nearest_up(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, f: int) -> torch.Tensor:
    """out + conv3x3(nearest_upsample(x, f), weight, padding 1), the convolution computed at x's size;
    `out` (a fresh tensor that no backward reads) is updated in place.

    Each output phase (py, px) is a 2x2 convolution of x with the 3x3 taps summed onto the LR pixels
    that phase reads; all phases run as one convolution. That is 2.25x fewer operations than at HR size,
    and no upsampled map.
    """
    o, i = weight.shape[:2]
    taps, starts = _phase_layout(f)
    kernels = (weight.reshape(o * i, 9) @ taps.to(weight)).view(o, i, f * f, 2, 2).permute(2, 0, 1, 3, 4)
    phases = F.conv2d(x, kernels.reshape(f * f * o, i, 2, 2), padding=1)  # window starts -1 .. h-1
    return _AddPhases.apply(out, phases, f, starts)


def conv3x3(cond: Features, weights: Sequence[torch.Tensor],
            bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """conv2d(full conditioning, cat(weights), bias, padding=1), one part of the conditioning at a time
    (whole when traced for export: the in-place phase adds are not an exportable graph)."""
    if isinstance(cond, torch.Tensor) or torch.jit.is_tracing():
        full = cond if isinstance(cond, torch.Tensor) else cond.full()
        return F.conv2d(full, torch.cat(list(weights)), bias, padding=1)
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
    if f >= 2 and (hh, ww) == (h * f, w * f):
        return add_conv3x3_nearest_up(out, cond.stack, w_stack, f)
    return out + F.conv2d(F.interpolate(cond.stack, size=(hh, ww)), w_stack, padding=1)
