"""FlowUpsamplerNet: the conditional flow between an HR image and its latents, L levels deep."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.memory_format import to_compute_format
from models.srflow.actnorm import ActNorm, start_logdet
from models.srflow.conditioning import Conditioning
from models.srflow.coupling import CondAffineSeparatedAndCond
from models.srflow.flow_step import FlowStep
from models.srflow.split import Split2d
from models.srflow.squeeze import Squeeze

Cond = Union[torch.Tensor, Conditioning]


class FlowUpsamplerNet(nn.Module):
    """Level l = 1..L: squeeze, `n_no_affine` steps without coupling, K coupling steps, then a Split2d
    if l < L - 1 (l < L with `correct_splits`). Layers are `layers.{i}` in that order, as officially.

    forward(x, logdet, reverse, conds, epses, eps_std): `conds[l - 1]` conditions level l. Encode maps
    an HR image to z and appends each split's eps to `epses` (when a list); decode maps z back,
    popping split eps from `epses` (last level first) or drawing them at std `eps_std`.
    """

    def __init__(self, L: int, K: Union[int, Sequence[int]], cond_channels: int, in_channels: int = 3,
                 hidden_channels: int = 64, n_no_affine: int = 2, split: bool = True,
                 correct_splits: bool = False, consume_ratio: float = 0.5, logs_eps: float = 0.0,
                 affine_eps: float = 1e-4, gaussian_loss_weight: float = 1.0, checkpointing: bool = False,
                 channels_last: Optional[bool] = None):
        super().__init__()
        self.L = L
        self.checkpointing = checkpointing
        self.channels_last = channels_last
        self.layers = nn.ModuleList()
        self.level_of: List[int] = []  # level of each layer
        c = in_channels
        for level in range(1, L + 1):
            k_level = K if isinstance(K, int) else K[level]
            c *= 4
            steps = [FlowStep(c) for _ in range(n_no_affine)]
            steps += [FlowStep(c, CondAffineSeparatedAndCond(c, cond_channels, hidden_channels, affine_eps))
                      for _ in range(k_level)]
            layers: List[nn.Module] = [Squeeze(), *steps]
            if split and level < L - (0 if correct_splits else 1):
                layers.append(Split2d(c, consume_ratio, logs_eps, gaussian_loss_weight))
                c = layers[-1].num_channels_pass
            self.layers.extend(layers)
            self.level_of += [level] * len(layers)
        self.out_channels = c

    def _check_size(self, level: int, cond: Cond, x: torch.Tensor) -> None:
        fea = cond if isinstance(cond, torch.Tensor) else cond.fea
        if fea.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"level {level} of the flow is {tuple(x.shape[-2:])} but its conditioning is "
                             f"{tuple(fea.shape[-2:])}: HR size, scale and flow_scale do not agree")

    def _run_step(self, step: FlowStep, x: torch.Tensor, logdet: torch.Tensor, reverse: bool,
                  ft: Optional[Cond]) -> Tuple[torch.Tensor, torch.Tensor]:
        # Not while an ActNorm still initialises from this batch: the recomputation would not repeat that.
        if self.checkpointing and self.training and torch.is_grad_enabled() and not reverse and \
                all(m.initialized for m in step.modules() if isinstance(m, ActNorm)):
            return checkpoint(step, x, logdet, reverse, ft, use_reentrant=False)
        return step(x, logdet, reverse, ft)

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None, reverse: bool = False,
                conds: Sequence[Cond] = (), epses: Optional[List[torch.Tensor]] = None,
                eps_std: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        logdet = start_logdet(x, logdet)
        x = to_compute_format(x, self.channels_last)
        order = range(len(self.layers))
        checked = set()
        for i in (reversed(order) if reverse else order):
            layer, level = self.layers[i], self.level_of[i]
            if isinstance(layer, Split2d):
                x, logdet = layer(x, logdet, reverse, epses=epses, eps_std=eps_std)
            elif isinstance(layer, FlowStep):
                ft = conds[level - 1] if layer.has_coupling else None
                if ft is not None and level not in checked:
                    self._check_size(level, ft, x)
                    checked.add(level)
                x, logdet = self._run_step(layer, x, logdet, reverse, ft)
            else:  # a squeeze: its reshape leaves NCHW
                x, logdet = layer(x, logdet, reverse)
                x = to_compute_format(x, self.channels_last)
        return x, logdet
