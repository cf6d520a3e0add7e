"""FlowUpsamplerNet: the conditional flow between an HR image and its latents, L levels deep."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.memory_format import to_compute_format
from models.srflow.conditioning import Features, cast_once_for_autocast
from models.srflow.config import FlowConfig
from models.srflow.coupling import CondAffineSeparatedAndCond
from models.srflow.deep_coupling import DeepCondAffine
from models.srflow.flow_step import FlowStep
from models.srflow.invertible import NO_COND, FlowCond, InvertibleLayer, start_logdet
from models.srflow.noise_coupling import NoiseCondAffine
from models.srflow.split import Split2d
from models.srflow.squeeze import Squeeze


def coupling(config: FlowConfig, channels: int, cond_channels: int, reads_std: bool) -> InvertibleLayer:
    """The coupling of a flow step: SRFlow's, an SRFlow-DA variant's, or NCSR's (when the flow has `std_steps`)."""
    width, eps = config.hidden_channels, config.affine_eps
    if config.variant:
        return DeepCondAffine(channels, cond_channels, width, eps, config.variant, config.n_hidden_layers,
                              config.kernel_hidden)
    if config.std_steps:
        return NoiseCondAffine(channels, cond_channels, width, eps, config.std_channels, reads_std)
    return CondAffineSeparatedAndCond(channels, cond_channels, width, eps)


class FlowUpsamplerNet(nn.Module):
    """Level l = 1..L: squeeze (by `squeeze`: 2, SRFlow-DA-S the scale), `n_no_affine` steps without coupling,
    K coupling steps, then a Split2d where FlowConfig.splits_after_level says (SRFlow-DA-S also splits after
    every sixth step). Layers are `layers.{i}` in that order, as officially. With NCSR's `std_steps`, the last
    std_steps[l - 1] coupling steps of level l read the noise level.

    forward(x, logdet, reverse, conds, epses, eps_std, std) keeps the InvertibleLayer contract as a whole:
    `conds[l - 1]` conditions level l. Encode maps an HR image to z and appends each split's eps to `epses`
    (when a list); decode maps z back, popping split eps from `epses` (last level first) or drawing them at
    std `eps_std`. Every layer is called alike, with its level's FlowCond.
    """

    def __init__(self, config: FlowConfig, cond_channels: int, in_channels: int, checkpointing: bool = False,
                 channels_last: Optional[bool] = None, squeeze: int = 2):
        super().__init__()
        self.L = config.L
        self.squeeze = squeeze
        self.checkpointing = checkpointing
        self.channels_last = channels_last
        self.layers = nn.ModuleList()
        self.level_of: List[int] = []  # level of each layer
        c = in_channels

        def split(channels: int) -> Split2d:
            return Split2d(channels, config.consume_ratio, config.logs_eps, config.gaussian_loss_weight)
        for level in range(1, self.L + 1):
            k_level = config.K if isinstance(config.K, int) else config.K[level]
            std_from = k_level - (config.std_steps[level - 1] if config.std_steps else 0)
            c *= squeeze * squeeze
            layers: List[InvertibleLayer] = [Squeeze(channels_last, squeeze)]
            layers += [FlowStep(c) for _ in range(config.n_no_affine)]
            for k in range(k_level):
                layers.append(FlowStep(c, coupling(config, c, cond_channels, reads_std=k >= std_from)))
                if config.splits_after_step(k):
                    layers.append(split(c))
                    c = layers[-1].num_channels_pass
            if config.splits_after_level(level):
                layers.append(split(c))
                c = layers[-1].num_channels_pass
            self.layers.extend(layers)
            self.level_of += [level] * len(layers)
        self.out_channels = c

    def _check_sizes(self, x: torch.Tensor, conds: Sequence[Features], reverse: bool) -> None:
        if len(conds) != self.L:
            raise ValueError(f"the flow has {self.L} levels but got conditioning for {len(conds)}")
        hr_over_x = self.squeeze ** self.L if reverse else 1  # encode reads the HR image, decode the last z
        for level, features in enumerate(conds, 1):
            fea = features if isinstance(features, torch.Tensor) else features.fea
            size = tuple(side * hr_over_x // self.squeeze ** level for side in x.shape[-2:])
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
                eps_std: Optional[float] = None, std: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        self._check_sizes(x, conds, reverse)
        logdet = start_logdet(x, logdet)
        x = to_compute_format(x, self.channels_last)
        order = range(len(self.layers))
        level, cond = None, NO_COND
        for i in (reversed(order) if reverse else order):
            if self.level_of[i] != level:  # one level's cast conditioning alive at a time
                level = self.level_of[i]
                cond = FlowCond(cast_once_for_autocast(conds[level - 1]), epses, eps_std, std)
            x, logdet = self._run(self.layers[i], x, logdet, reverse, cond)
        return x, logdet
