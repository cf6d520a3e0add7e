"""NCSRNet (younggeun-kim/NCSR): SRFlow whose flow is also conditioned on the level of a noise added in training."""
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from data.imresize import imresize
from models import NETWORKS
from models.recipe_section import given, lookup
from models.srflow.config import KEYS, NCSR_FLOW, srflow_config
from models.srflow.srflow_net import LrEnc, SRFlowNet, _section_name, load_pretrained_rrdb
from utils.errors import ConfigError
from utils.recipe_keys import NUM, Key, WhenGiven

NOISE_MODES = ("softflow", "none")


@dataclass(frozen=True)
class NoiseConfig:
    """NCSR's training noise: `networks.<name>.noise` (the official conf's top-level std, mode, LRnoise, prob)."""
    std: float = 0.05  # highest noise level; each training image draws its own from U(0, std)
    mode: str = "softflow"  # softflow: the HR image gets the noise and the flow its level; other: neither
    LRnoise: bool = True  # the LR image gets the noise too, shrunk by MATLAB's bicubic imresize
    prob: float = 1.0  # read and unused by the official code (its use is commented out); kept for the conf


NOISE_KEYS = ("std", "mode", "LRnoise", "prob")
# `networks.<name>` of which_model_G NCSRNet: SRFlow's keys, NCSR's flow keys and the training noise.
NCSR_KEYS = {
    **KEYS,
    "flow": NCSR_FLOW,
    "noise": WhenGiven({
        "std": Key(NUM, NoiseConfig.std, "highest training noise level (per image: U(0, std))", at_least=0,
                   fill=False),
        "mode": Key(str, NoiseConfig.mode, "softflow (the flow reads the level) or none", fill=False),
        "LRnoise": Key(bool, NoiseConfig.LRnoise, "the LR image gets the noise too", fill=False),
        "prob": Key(NUM, NoiseConfig.prob, "accepted; unused (as officially)", at_least=0, fill=False)},
        "NCSR's training noise (the official conf's top-level std, mode, LRnoise, prob)", weights_fit=True),
}


class NCSRNet(SRFlowNet):
    """SRFlowNet plus `std`, the official NCSR argument after `y_label`: the noise level the flow's last
    `flow.S` coupling steps per level read, (B, 1, 1, 1) or a (B, 3, H, W) noise map with std_channels 3.
    None runs those couplings at level 0, which is what the official model passes at validation and test
    time, except in training with a noise mode other than softflow, where the official model passes None and
    those couplings are skipped. `training_noise` gives the level of a training batch.
    """

    def __init__(self, config, noise: NoiseConfig):
        super().__init__(config)
        self.noise = noise
        self.std_channels = config.flow.std_channels

    def forward(self, gt: Optional[torch.Tensor] = None, lr: Optional[torch.Tensor] = None,
                z: Optional[torch.Tensor] = None, eps_std: Optional[float] = None, reverse: bool = False,
                epses: Optional[List[torch.Tensor]] = None, reverse_with_grad: bool = False,
                lr_enc: Optional[LrEnc] = None, add_gt_noise: bool = True, step: Optional[int] = None,
                y_label: Optional[torch.Tensor] = None, std: Optional[torch.Tensor] = None) -> tuple:
        if std is None and not (self.training and self.noise.mode != "softflow"):
            like = lr if lr is not None else gt
            std = like.new_zeros(like.shape[0], 1, 1, 1)
        if not reverse:
            return self.encode(gt, lr, epses, lr_enc, add_gt_noise, std=std)
        with torch.set_grad_enabled(reverse_with_grad and torch.is_grad_enabled()):
            return self.decode(lr, z, eps_std, epses, lr_enc, add_gt_noise, std=std)

    def training_noise(self, hq: torch.Tensor,
                       lq: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(HR, LR, std) of a training batch, as the official NCSR model prepares them: a level per image from
        U(0, noise.std), noise = N(0, 1) * level on the HR image; LRnoise adds that noise shrunk by the scale to
        the LR image. softflow trains on the noisy HR image with std = the level (std_channels 1) or the noise
        itself (std_channels 3); another mode trains on the clean HR image without std (its couplings skip)."""
        level = torch.rand(hq.shape[0], 1, 1, 1, device=hq.device, dtype=hq.dtype) * self.noise.std
        noise = torch.randn_like(hq) * level
        if self.noise.LRnoise:
            lq = lq + imresize(noise, scale=1 / self.hr_factor)
        if self.noise.mode != "softflow":
            return hq, lq, None
        return hq + noise, lq, noise if self.std_channels == 3 else level


def noise_config(opt_net: dict, where: str) -> NoiseConfig:
    section = opt_net.get("noise") or {}
    config = NoiseConfig(**given(**{key: lookup(section, (key,)) for key in NOISE_KEYS}))
    if config.mode not in NOISE_MODES:
        raise ConfigError(f"`{where}.noise.mode` must be one of {', '.join(NOISE_MODES)}, got `{config.mode}`")
    if not (math.isfinite(config.std) and config.std >= 0):
        raise ConfigError(f"`{where}.noise.std` must be a number >= 0 (the highest noise level), got {config.std}")
    return config


@NETWORKS.register("NCSRNet", keys=NCSR_KEYS)
def build_ncsr(opt_net: dict, opt: dict) -> NCSRNet:
    """NCSRNet from `networks.<name>`; loads `pretrain_rrdb` when set."""
    where = f"networks.{_section_name(opt_net, opt)}"
    net = NCSRNet(srflow_config(opt_net, opt, where), noise_config(opt_net, where))
    if opt_net.get("pretrain_rrdb"):
        load_pretrained_rrdb(net, opt_net["pretrain_rrdb"], where)
    return net
