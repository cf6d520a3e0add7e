"""FlowUpsamplerNet: the conditional flow between an HR image and its latents, L levels deep."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.memory_format import to_compute_format
from models.srflow.conditioning import Features
from models.srflow.config import FlowConfig
from models.srflow.coupling import CondAffineSeparatedAndCond
from models.srflow.flow_step import FlowStep
from models.srflow.invertible import FlowCond, InvertibleLayer, start_logdet
from models.srflow.split import Split2d
from models.srflow.squeeze import Squeeze


class FlowUpsamplerNet(nn.Module):
    """Level l = 1..L: squeeze, `n_no_affine` steps without coupling, K coupling steps, then a Split2d
    if l < L - 1 (l < L with `correct_splits`). Layers are `layers.{i}` in that order, as officially.

    forward(x, logdet, reverse, conds, epses, eps_std) keeps the InvertibleLayer contract as a whole:
    `conds[l - 1]` conditions level l. Encode maps an HR image to z and appends each split's eps to `epses`
    (when a list); decode maps z back, popping split eps from `epses` (last level first) or drawing them at
    std `eps_std`. Every layer is called alike, with its level's FlowCond.
    """

    def __init__(self, config: FlowConfig, cond_channels: int, in_channels: int, checkpointing: bool = False,
                 channels_last: Optional[bool] = None):
        super().__init__()
        self.L = config.L
        self.checkpointing = checkpointing
        self.channels_last = channels_last
        self.layers = nn.ModuleList()
        self.level_of: List[int] = []  # level of each layer
        c = in_channels
        for level in range(1, self.L + 1):
            k_level = config.K if isinstance(config.K, int) else config.K[level]
            c *= 4
            layers: List[InvertibleLayer] = [Squeeze(channels_last)]
            layers += [FlowStep(c) for _ in range(config.n_no_affine)]
            layers += [FlowStep(c, CondAffineSeparatedAndCond(c, cond_channels, config.hidden_channels,
                                                              config.affine_eps)) for _ in range(k_level)]
            if config.split and level < self.L - (0 if config.correct_splits else 1):
                layers.append(Split2d(c, config.consume_ratio, config.logs_eps, config.gaussian_loss_weight))
                c = layers[-1].num_channels_pass
            self.layers.extend(layers)
            self.level_of += [level] * len(layers)
        self.out_channels = c

    def _check_sizes(self, x: torch.Tensor, conds: Sequence[Features], reverse: bool) -> None:
        if len(conds) != self.L:
            raise ValueError(f"the flow has {self.L} levels but got conditioning for {len(conds)}")
        hr_over_x = 2 ** self.L if reverse else 1  # encode reads the HR image, decode the last level's z
        for level, features in enumerate(conds, 1):
            fea = features if isinstance(features, torch.Tensor) else features.fea
            size = tuple(side * hr_over_x // 2 ** level for side in x.shape[-2:])
            if fea.shape[-2:] != size:
                raise ValueError(f"level {level} of the flow is {size} but its conditioning is "
                                 f"{tuple(fea.shape[-2:])}: HR size, scale and flow_scale do not agree")

    def _run(self, layer: InvertibleLayer, x: torch.Tensor, logdet: torch.Tensor, reverse: bool,
             cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.checkpointing and self.training and torch.is_grad_enabled() and not reverse and layer.recomputable():
            return checkpoint(layer, x, logdet, reverse, cond, use_reentrant=False)
        return layer(x, logdet, reverse, cond)

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None, reverse: bool = False,
                conds: Sequence[Features] = (), epses: Optional[List[torch.Tensor]] = None,
                eps_std: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_sizes(x, conds, reverse)
        logdet = start_logdet(x, logdet)
        x = to_compute_format(x, self.channels_last)
        level_conds = [FlowCond(features, epses, eps_std) for features in conds]
        order = range(len(self.layers))
        for i in (reversed(order) if reverse else order):
            x, logdet = self._run(self.layers[i], x, logdet, reverse, level_conds[self.level_of[i] - 1])
        return x, logdet
