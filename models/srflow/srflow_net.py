"""SRFlowNet: RRDB encoder + conditional flow, with the official forward signature and DLAS's recipe keys."""
import math
import os
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from models import NETWORKS
from models.srflow import geometry  # noqa: F401  (declares SRFlow's size rules)
from models.memory_format import weights_to_compute_format
from models.srflow.conditioning import Conditioning
from models.srflow.config import KEYS, SRFlowConfig, srflow_config
from models.srflow.flow_upsampler import FlowUpsamplerNet
from models.srflow.gaussian import gaussian_logp
from models.srflow.rrdb_features import SRFlowRRDB
from models.weights import load_network_weights, read_state_dict
from utils.errors import ConfigError

LrEnc = Tuple[List[Conditioning], Optional[torch.Tensor]]  # per-level conditioning, RRDB's own SR image
Tensors = Union[torch.Tensor, List[torch.Tensor]]


class SRFlowNet(nn.Module):
    """Encode: forward(gt=hq, lr=lq) -> (z, nll, logdet), or (epses, nll, logdet) when `epses` is a list
    ([split eps of level 1, ..., z], appended to that list). nll is per image in bits per HR pixel.
    Decode: forward(lr=lq, z=z, eps_std=t, reverse=True, epses=None) -> (sr, logdet, rrdb_out).

    `flow_scale` picks the RRDB feature of each level (level l reads the feature at flow_scale / 2**l
    times the LR size); the HR image is `flow_scale / initial_stride` times the LR input.
    """

    def __init__(self, config: SRFlowConfig):
        super().__init__()
        rrdb, flow = config.rrdb, config.flow
        self.flow_scale = config.feature_scale()
        if self.flow_scale % rrdb.initial_stride:
            raise ValueError(f"flow_scale {self.flow_scale} is not a multiple of initial_stride {rrdb.initial_stride}")
        self.hr_factor = self.flow_scale // rrdb.initial_stride
        self.L = flow.L
        squeeze = flow.squeeze_factor(self.flow_scale)
        self.z_stride = squeeze ** flow.L  # HR sides / z sides
        self.quant = config.quant
        self.noise_quant = flow.noise_quant
        self.gaussian_gt_noise = flow.variant is not None  # SRFlow-DA's training noise (see encode)
        self.factors = [self.flow_scale / squeeze ** level for level in range(1, flow.L + 1)]
        self.RRDB = SRFlowRRDB(rrdb, flow.blocks, flow.concat)
        self.flowUpsamplerNet = FlowUpsamplerNet(flow, self.RRDB.cond_channels, in_channels=rrdb.out_nc,
                                                 checkpointing=rrdb.checkpointing, channels_last=rrdb.channels_last,
                                                 squeeze=squeeze)
        self.train_rrdb = True
        self.set_train_rrdb(config.train_rrdb)
        weights_to_compute_format(self, rrdb.channels_last)

    def _apply(self, fn, *args, **kwargs):
        """Module.to, .cuda, .float, ...: then the convolution weights' layout for their new device."""
        super()._apply(fn, *args, **kwargs)
        weights_to_compute_format(self, self.RRDB.channels_last)
        return self

    def set_train_rrdb(self, flag: bool) -> bool:
        """Freeze (False: no gradients, RRDB run under no_grad) or unfreeze the RRDB; True if it changed."""
        changed = flag != self.train_rrdb
        self.train_rrdb = flag
        for p in self.RRDB.parameters():
            p.requires_grad_(flag)
        return changed

    def rrdb_parameter_names(self) -> List[str]:
        """The names (as in named_parameters) of the RRDB's parameters: the part `lr_RRDB` and freezing apply to."""
        return [f"RRDB.{name}" for name, _ in self.RRDB.named_parameters()]

    def z_shape(self, lr_shape: Sequence[int]) -> Tuple[int, int, int, int]:
        """Latent z's shape (B, C, H, W) for an LR batch of shape (B, C, h, w)."""
        b, _, h, w = lr_shape
        hr_h, hr_w = h * self.hr_factor, w * self.hr_factor
        if hr_h % self.z_stride or hr_w % self.z_stride:
            raise ValueError(f"HR size {hr_h}x{hr_w} (LR {h}x{w} x{self.hr_factor}) must divide by "
                             f"{self.z_stride} (the flow's squeezes)")
        return b, self.flowUpsamplerNet.out_channels, hr_h // self.z_stride, hr_w // self.z_stride

    def rrdb_preprocessing(self, lr: torch.Tensor, with_out: bool = False) -> LrEnc:
        """The flow's conditioning (and the RRDB's own SR image when `with_out`): a value for `lr_enc`."""
        with torch.set_grad_enabled(self.train_rrdb and torch.is_grad_enabled()):
            return self.RRDB.conditioning(lr, self.factors, with_out)

    def forward(self, gt: Optional[torch.Tensor] = None, lr: Optional[torch.Tensor] = None,
                z: Optional[torch.Tensor] = None, eps_std: Optional[float] = None, reverse: bool = False,
                epses: Optional[List[torch.Tensor]] = None, reverse_with_grad: bool = False,
                lr_enc: Optional[LrEnc] = None, add_gt_noise: bool = True, step: Optional[int] = None,
                y_label: Optional[torch.Tensor] = None) -> tuple:
        """Official argument order; `step` and `y_label` are accepted and unused, as officially."""
        if not reverse:
            return self.encode(gt, lr, epses, lr_enc, add_gt_noise)
        with torch.set_grad_enabled(reverse_with_grad and torch.is_grad_enabled()):
            return self.decode(lr, z, eps_std, epses, lr_enc, add_gt_noise)

    def encode(self, gt: torch.Tensor, lr: torch.Tensor, epses: Optional[List[torch.Tensor]] = None,
               lr_enc: Optional[LrEnc] = None, add_gt_noise: bool = True,
               std: Optional[torch.Tensor] = None) -> Tuple[Tensors, torch.Tensor, torch.Tensor]:
        """(z or epses, nll, logdet) of HR images `gt` given LR images `lr` (or their `lr_enc`). `add_gt_noise`:
        SRFlow's uniform dequantisation noise of one quantisation step and its -log(quant) per pixel; SRFlow-DA
        adds Gaussian noise of std 4 / (sqrt(3) * 255) instead, without a logdet term, as officially."""
        if gt.shape[2] % self.z_stride or gt.shape[3] % self.z_stride:
            raise ValueError(f"HR size {tuple(gt.shape[-2:])} must divide by {self.z_stride} (the flow's squeezes)")
        if lr is not None and gt.shape[-2:] != (lr.shape[2] * self.hr_factor, lr.shape[3] * self.hr_factor):
            raise ValueError(f"HR {tuple(gt.shape[-2:])} is not {self.hr_factor}x LR {tuple(lr.shape[-2:])}")
        conds, _ = lr_enc if lr_enc is not None else self.rrdb_preprocessing(lr)
        pixels = gt.shape[2] * gt.shape[3]
        logdet = gt.new_zeros(gt.shape[0])
        z = gt
        if add_gt_noise and self.gaussian_gt_noise:
            z = z + torch.randn_like(z) * (4 / math.sqrt(3) / 255.0)
        elif add_gt_noise:  # dequantisation: uniform noise of one quantisation step
            if self.noise_quant:
                z = z + (torch.rand_like(z) - 0.5) / self.quant
            logdet = logdet + float(-math.log(self.quant) * pixels)
        found = [] if isinstance(epses, list) else None
        z, logdet = self.flowUpsamplerNet(z, logdet, conds=conds, epses=found, std=std)
        z = z.contiguous()
        nll = -(logdet + gaussian_logp(z)) / float(math.log(2.0) * pixels)
        if found is None:
            return z, nll, logdet
        epses.extend(eps.contiguous() for eps in found)
        epses.append(z)
        return epses, nll, logdet

    def decode(self, lr: torch.Tensor, z: Optional[torch.Tensor] = None, eps_std: Optional[float] = None,
               epses: Optional[List[torch.Tensor]] = None, lr_enc: Optional[LrEnc] = None,
               add_gt_noise: bool = True,
               std: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(sr, logdet, rrdb_out): z from the end of `epses` if given, else `z`, else drawn at `eps_std`.
        Latents far from the training data can make the reverse flow diverge (inf, NaN, huge values): sr is
        returned as computed, and inference/sr.py decides what to do about it."""
        shape = self.z_shape(lr.shape)
        epses = list(epses) if epses else None  # the caller's list stays whole
        if epses:
            z = epses.pop()
        if z is None:  # the prior at temperature eps_std (its mean at 0)
            temperature = 1.0 if eps_std is None else eps_std
            z = torch.zeros(shape, device=lr.device, dtype=lr.dtype)
            if temperature != 0:
                z.normal_(0.0, temperature)
        conds, out = lr_enc if lr_enc is not None else self.rrdb_preprocessing(lr, with_out=True)
        logdet = z.new_zeros(z.shape[0])
        if add_gt_noise:
            pixels = z.shape[2] * z.shape[3] * self.z_stride ** 2
            logdet = logdet + float(math.log(self.quant) * pixels)
        sr, logdet = self.flowUpsamplerNet(z, logdet, reverse=True, conds=conds, epses=epses, eps_std=eps_std,
                                           std=std)
        return sr.contiguous(), logdet, out  # as computed: diverged values are inference/sr.py's to handle


# ---- building from a DLAS recipe section ------------------------------------------------------------

def _section_name(opt_net: dict, opt: dict) -> str:
    for name, section in (opt.get("networks") or {}).items():
        if section is opt_net:
            return name
    for name, section in (opt.get("networks") or {}).items():
        if section == opt_net:
            return name
    return "<name>"


def load_pretrained_rrdb(net: SRFlowNet, path: str, where: str) -> None:
    """A stage-1 RRDB checkpoint (ours, DLAS's or official names; or a whole SRFlow's `RRDB.*`) into net.RRDB."""
    if not os.path.isfile(path):
        raise ConfigError(f"`{where}.pretrain_rrdb`: no such file {path}")
    sd = read_state_dict(path)
    if any(k.startswith("RRDB.") for k in sd):
        sd = {k[len("RRDB."):]: v for k, v in sd.items() if k.startswith("RRDB.")}
    load_network_weights(net.RRDB, sd, strict=True)


@NETWORKS.register("srflow", keys=KEYS)
def build_srflow(opt_net: dict, opt: dict) -> SRFlowNet:
    """SRFlowNet from `networks.<name>`; loads `pretrain_rrdb` when set (pass None to skip, e.g. on resume)."""
    where = f"networks.{_section_name(opt_net, opt)}"
    net = SRFlowNet(srflow_config(opt_net, opt, where))
    if opt_net.get("pretrain_rrdb"):
        load_pretrained_rrdb(net, opt_net["pretrain_rrdb"], where)
    return net
