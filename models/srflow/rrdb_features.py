"""SRFlow's RRDB encoder: the RRDBNet whose intermediate features condition each flow level."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from models.rrdb import RRDBConfig, RRDBNet
from models.srflow.conditioning import Conditioning


class SRFlowRRDB(RRDBNet):
    """RRDBNet (same parameters and names) that also returns the flow's conditioning.

    Feature `fea_up{f}` for an HR/LR factor f: f=1 is `last_lr_fea` (trunk output plus its skip),
    f=2,4,8 the up-convolutions' outputs after LeakyReLU (the official code activates them in place),
    f=1/2 and 1/4 bilinear downscales of `last_lr_fea` (`fea_up0`, `fea_up-1`).
    """

    def __init__(self, config: RRDBConfig, blocks: Sequence[int], concat: bool):
        super().__init__(config)
        for m in self.outer_convs():  # official SRFlow keeps PyTorch's default init outside the dense blocks
            m.reset_parameters()
        self.blocks = list(blocks)
        self.concat = concat and bool(self.blocks)

    @property
    def cond_channels(self) -> int:
        nf = self.conv_body.out_channels
        return nf * (1 + len(self.blocks)) if self.concat else nf

    def conditioning(self, lr: torch.Tensor, factors: Sequence[float],
                     with_out: bool = False) -> Tuple[List[Conditioning], Optional[torch.Tensor]]:
        """Conditioning for each factor in `factors`, and the RRDB's HR image when `with_out`."""
        last, kept = self.trunk(lr, keep=self.blocks)
        stack = torch.cat([kept[i] for i in self.blocks], dim=1) if self.concat else None
        ups = self.upsampled(last, until=None if with_out else max(factors))
        feats: Dict[float, torch.Tensor] = {1.0: last, **{float(f): feat for f, feat in ups}}
        for f in factors:
            if f < 1:
                feats[f] = F.interpolate(last, scale_factor=f, mode="bilinear", align_corners=False,
                                         recompute_scale_factor=True)
        out = self.head(ups[-1][1]).contiguous() if with_out else None
        return [Conditioning(feats[f], stack) for f in factors], out
