"""SRFlowNet: RRDB encoder + conditional flow, with the official forward signature and DLAS's recipe keys."""
import math
import os
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from models import NETWORKS
from models.srflow.conditioning import Conditioning
from models.srflow.flow_upsampler import FlowUpsamplerNet
from models.srflow.rrdb_features import SRFlowRRDB
from models.srflow.split import gaussian_logp
from models.weights import load_network_weights, read_state_dict
from utils.errors import ConfigError, closest
from utils.options import FLOW as FLOW_SCHEMA

LrEnc = Tuple[List[Conditioning], Optional[torch.Tensor]]  # per-level conditioning, RRDB's own SR image
Tensors = Union[torch.Tensor, List[torch.Tensor]]


class SRFlowNet(nn.Module):
    """Encode: forward(gt=hq, lr=lq) -> (z, nll, logdet), or (epses, nll, logdet) when `epses` is a list
    ([split eps of level 1, ..., z], appended to that list). nll is per image in bits per HR pixel.
    Decode: forward(lr=lq, z=z, eps_std=t, reverse=True, epses=None) -> (sr, logdet, rrdb_out).

    `flow_scale` picks the RRDB feature of each level (level l reads the feature at flow_scale / 2**l
    times the LR size); the HR image is `flow_scale / initial_stride` times the LR input.
    """

    def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32, scale: int = 4, K: Union[int, Sequence[int]] = 16,
                 L: int = 3, flow_scale: Optional[int] = None, initial_stride: int = 1, in_nc: int = 3,
                 out_nc: int = 3, blocks: Sequence[int] = (1, 8, 15, 22), concat: bool = True,
                 n_no_affine: int = 2, split: bool = True, correct_splits: bool = False,
                 consume_ratio: float = 0.5, logs_eps: float = 0.0, hidden_channels: int = 64,
                 affine_eps: float = 1e-4, gaussian_loss_weight: float = 1.0, quant: float = 255,
                 noise_quant: bool = True, train_rrdb: bool = False, train_rrdb_delay: Optional[float] = None,
                 checkpointing: bool = False, channels_last: Optional[bool] = None):
        super().__init__()
        self.flow_scale = flow_scale or scale
        if self.flow_scale % initial_stride:
            raise ValueError(f"flow_scale {self.flow_scale} is not a multiple of initial_stride {initial_stride}")
        self.hr_factor = self.flow_scale // initial_stride
        self.L = L
        self.quant = quant
        self.noise_quant = noise_quant
        self.factors = [self.flow_scale / 2 ** level for level in range(1, L + 1)]
        self.RRDB = SRFlowRRDB(in_nc, out_nc, nf, nb, gc, scale, initial_stride, checkpointing=checkpointing,
                               channels_last=channels_last, blocks=blocks, concat=concat)
        self.flowUpsamplerNet = FlowUpsamplerNet(
            L, K, self.RRDB.cond_channels, in_channels=out_nc, hidden_channels=hidden_channels,
            n_no_affine=n_no_affine, split=split, correct_splits=correct_splits, consume_ratio=consume_ratio,
            logs_eps=logs_eps, affine_eps=affine_eps, gaussian_loss_weight=gaussian_loss_weight,
            checkpointing=checkpointing, channels_last=channels_last)
        self.train_rrdb_delay = train_rrdb_delay  # read by the trainer, which unfreezes the RRDB in time
        self.train_rrdb = True
        self.set_train_rrdb(train_rrdb)

    def set_train_rrdb(self, flag: bool) -> bool:
        """Freeze (False: no gradients, RRDB run under no_grad) or unfreeze the RRDB; True if it changed."""
        changed = flag != self.train_rrdb
        self.train_rrdb = flag
        for p in self.RRDB.parameters():
            p.requires_grad_(flag)
        return changed

    def z_shape(self, lr_shape: Sequence[int]) -> Tuple[int, int, int, int]:
        """Latent z's shape (B, C, H, W) for an LR batch of shape (B, C, h, w)."""
        b, _, h, w = lr_shape
        hr_h, hr_w = h * self.hr_factor, w * self.hr_factor
        if hr_h % 2 ** self.L or hr_w % 2 ** self.L:
            raise ValueError(f"HR size {hr_h}x{hr_w} (LR {h}x{w} x{self.hr_factor}) must divide by "
                             f"2**L = {2 ** self.L}")
        return b, self.flowUpsamplerNet.out_channels, hr_h // 2 ** self.L, hr_w // 2 ** self.L

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
               lr_enc: Optional[LrEnc] = None,
               add_gt_noise: bool = True) -> Tuple[Tensors, torch.Tensor, torch.Tensor]:
        """(z or epses, nll, logdet) of HR images `gt` given LR images `lr` (or their `lr_enc`)."""
        if gt.shape[2] % 2 ** self.L or gt.shape[3] % 2 ** self.L:
            raise ValueError(f"HR size {tuple(gt.shape[-2:])} must divide by 2**L = {2 ** self.L}")
        if lr is not None and gt.shape[-2:] != (lr.shape[2] * self.hr_factor, lr.shape[3] * self.hr_factor):
            raise ValueError(f"HR {tuple(gt.shape[-2:])} is not {self.hr_factor}x LR {tuple(lr.shape[-2:])}")
        conds, _ = lr_enc if lr_enc is not None else self.rrdb_preprocessing(lr)
        pixels = gt.shape[2] * gt.shape[3]
        logdet = gt.new_zeros(gt.shape[0])
        z = gt
        if add_gt_noise:  # dequantisation: uniform noise of one quantisation step
            if self.noise_quant:
                z = z + (torch.rand_like(z) - 0.5) / self.quant
            logdet = logdet + float(-math.log(self.quant) * pixels)
        found = [] if isinstance(epses, list) else None
        z, logdet = self.flowUpsamplerNet(z, logdet, conds=conds, epses=found)
        z = z.contiguous()
        nll = -(logdet + gaussian_logp(z)) / float(math.log(2.0) * pixels)
        if found is None:
            return z, nll, logdet
        epses.extend(eps.contiguous() for eps in found)
        epses.append(z)
        return epses, nll, logdet

    def decode(self, lr: torch.Tensor, z: Optional[torch.Tensor] = None, eps_std: Optional[float] = None,
               epses: Optional[List[torch.Tensor]] = None, lr_enc: Optional[LrEnc] = None,
               add_gt_noise: bool = True) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(sr, logdet, rrdb_out): z from the end of `epses` if given, else `z`, else drawn at `eps_std`."""
        shape = self.z_shape(lr.shape)
        epses = list(epses) if epses else None  # the caller's list stays whole
        if epses:
            z = epses.pop()
        if z is None:  # the prior at temperature eps_std (its mean at 0)
            std = 1.0 if eps_std is None else eps_std
            z = torch.zeros(shape, device=lr.device, dtype=lr.dtype)
            if std != 0:
                z.normal_(0.0, std)
        conds, out = lr_enc if lr_enc is not None else self.rrdb_preprocessing(lr, with_out=True)
        logdet = z.new_zeros(z.shape[0])
        if add_gt_noise:
            pixels = z.shape[2] * z.shape[3] * 4 ** self.L
            logdet = logdet + float(math.log(self.quant) * pixels)
        sr, logdet = self.flowUpsamplerNet(z, logdet, reverse=True, conds=conds, epses=epses, eps_std=eps_std)
        return keep_finite(sr.contiguous()), logdet, out


def keep_finite(sr: torch.Tensor) -> torch.Tensor:
    """Latents far from the training distribution can overflow the reverse flow: warn, and replace
    non-finite values (NaN and -inf by 0, +inf by 1) so the image stays usable."""
    bad = int((~torch.isfinite(sr)).sum())
    if bad == 0:
        return sr
    warnings.warn(f"SRFlow decode produced {bad} non-finite pixel values of {sr.numel()} (latents far outside "
                  f"the training distribution?); set them to 0 (NaN, -inf) or 1 (+inf)", RuntimeWarning,
                  stacklevel=3)
    return torch.nan_to_num(sr, nan=0.0, posinf=1.0, neginf=0.0)


# ---- building from a DLAS recipe section ------------------------------------------------------------

# The recipe schema's flow keys (patch_size and noInitialInj are accepted for DLAS recipes and change
# nothing); checked here too for sections built without parse_options.
FLOW_KEYS = set(FLOW_SCHEMA)
COUPLINGS = ("CondAffineSeparatedAndCond",)
PERMUTATIONS = ("invconv",)
SPLITS = ("Split2d",)


def _choice(value, known: Sequence[str], where: str) -> None:
    if value not in known:
        raise ConfigError(f"unknown {where.rsplit('.', 1)[-1]} `{value}` at `{where}`{closest(value, known)}; "
                          f"known: {', '.join(known)}")


def _section_name(opt_net: dict, opt: dict) -> str:
    for name, section in (opt.get("networks") or {}).items():
        if section is opt_net:
            return name
    for name, section in (opt.get("networks") or {}).items():
        if section == opt_net:
            return name
    return "<name>"


def _levels_k(opt_net: dict, flow: dict, L: int, where: str) -> Union[int, List[int]]:
    """Steps per level. The official code uses the constructor's K (DLAS: the section's `K`) whenever
    flow.K is an int, and flow.K itself when it is a per-level list (index 0 unused)."""
    k_flow, k_top = flow.get("K"), opt_net.get("K")
    if isinstance(k_flow, (list, tuple)):
        if len(k_flow) < L + 1:
            raise ConfigError(f"`{where}.flow.K` as a list needs L + 1 = {L + 1} entries (index 0 unused)")
        return list(k_flow)
    if k_top is None and k_flow is None:
        raise ConfigError(f"`{where}.K` is required (steps per flow level)")
    if k_top is not None and k_flow is not None and k_top != k_flow:
        raise ConfigError(f"`{where}.K` ({k_top}) and `{where}.flow.K` ({k_flow}) disagree; DLAS would use "
                          f"{k_top}: make them equal")
    return int(k_top if k_top is not None else k_flow)


def srflow_kwargs(opt_net: dict, opt: dict, where: str) -> dict:
    """SRFlowNet's arguments from a recipe section, with the official defaults for absent keys."""
    flow = opt_net.get("flow")
    if not isinstance(flow, dict):
        raise ConfigError(f"`{where}.flow` is required for which_model_G: srflow")
    for key, value in flow.items():
        if key not in FLOW_KEYS and value is not None:
            raise ConfigError(f"unknown key `{where}.flow.{key}`{closest(key, FLOW_KEYS)}; "
                              f"known: {', '.join(sorted(FLOW_KEYS))}")
    for key in ("nf", "nb"):
        if key not in opt_net:
            raise ConfigError(f"`{where}.{key}` is required for which_model_G: srflow")
    if "L" not in flow:
        raise ConfigError(f"`{where}.flow.L` is required (number of flow levels)")
    L = int(flow["L"])
    _choice(flow.get("coupling"), COUPLINGS, f"{where}.flow.coupling")
    _choice(flow.get("flow_permutation", "invconv"), PERMUTATIONS, f"{where}.flow.flow_permutation")
    split = flow.get("split") or {}
    _choice(split.get("type", "Split2d"), SPLITS, f"{where}.flow.split.type")
    for key in ("conditional", "cond_channels"):
        if split.get(key):
            raise ConfigError(f"`{where}.flow.split.{key}` is not supported (no official recipe uses it)")
    scale = opt_net.get("scale", opt.get("scale"))
    flow_scale = opt_net.get("flow_scale") or scale
    if scale not in (4, 8) or flow_scale not in (4, 8):
        raise ConfigError(f"`{where}.scale` and `{where}.flow_scale` must be 4 or 8, got {scale} and {flow_scale}")
    if flow_scale > scale:
        raise ConfigError(f"`{where}.flow_scale` ({flow_scale}) needs RRDB features beyond `scale` ({scale})")
    for level in range(1, L + 1):
        factor = flow_scale / 2 ** level
        key = {0.5: "fea_up0", 0.25: "fea_up-1"}.get(factor)
        if factor < 1 and (key is None or not flow.get(key)):
            raise ConfigError(f"flow level {level} of {L} at scale {flow_scale} reads RRDB feature "
                              f"`{key or factor}`: set `{where}.flow.{key}: true` or lower `flow.L`")
    stack = flow.get("stackRRDB") or {}
    blocks = list(stack.get("blocks") or [])
    if any(not 0 <= b < opt_net["nb"] for b in blocks):
        raise ConfigError(f"`{where}.flow.stackRRDB.blocks` {blocks} must index RRDB blocks 0..{opt_net['nb'] - 1}")
    affine = flow.get("CondAffineSeparatedAndCond") or {}
    hidden = affine.get("hidden_channels") or 64
    if flow.get("hidden_channels") not in (None, hidden):
        warnings.warn(f"`{where}.flow.hidden_channels` has no effect (as in the official code); the coupling "
                      f"width is `flow.CondAffineSeparatedAndCond.hidden_channels` ({hidden})")
    quant = ((opt.get("datasets") or {}).get("train") or {}).get("quant")
    return dict(
        nf=opt_net["nf"], nb=opt_net["nb"], gc=opt_net.get("gc", 32), scale=scale,
        K=_levels_k(opt_net, flow, L, where), L=L, flow_scale=flow_scale,
        initial_stride=opt_net.get("initial_stride", 1), in_nc=opt_net.get("in_nc", 3),
        out_nc=opt_net.get("out_nc", 3), blocks=blocks, concat=bool(stack.get("concat")),
        n_no_affine=int(flow.get("additionalFlowNoAffine") or 0), split=bool(split.get("enable")),
        correct_splits=bool(split.get("correct_splits")), consume_ratio=split.get("consume_ratio") or 0.5,
        logs_eps=split.get("logs_eps") or 0.0, hidden_channels=hidden,
        affine_eps=affine.get("eps", 1e-4), gaussian_loss_weight=flow.get("gaussian_loss_weight", 1),
        quant=255 if quant is None else quant,
        noise_quant=(flow.get("augmentation") or {}).get("noiseQuant", True),
        train_rrdb=bool(opt_net.get("train_RRDB", False)), train_rrdb_delay=opt_net.get("train_RRDB_delay"),
        checkpointing=bool(opt.get("checkpointing_enabled", False)), channels_last=opt.get("channels_last"))


def load_pretrained_rrdb(net: SRFlowNet, path: str, where: str) -> None:
    """A stage-1 RRDB checkpoint (ours, DLAS's or official names; or a whole SRFlow's `RRDB.*`) into net.RRDB."""
    if not os.path.isfile(path):
        raise ConfigError(f"`{where}.pretrain_rrdb`: no such file {path}")
    sd = read_state_dict(path)
    if any(k.startswith("RRDB.") for k in sd):
        sd = {k[len("RRDB."):]: v for k, v in sd.items() if k.startswith("RRDB.")}
    load_network_weights(net.RRDB, sd, strict=True)


@NETWORKS.register("srflow")
def build_srflow(opt_net: dict, opt: dict) -> SRFlowNet:
    """SRFlowNet from `networks.<name>`; loads `pretrain_rrdb` when set (pass None to skip, e.g. on resume)."""
    where = f"networks.{_section_name(opt_net, opt)}"
    net = SRFlowNet(**srflow_kwargs(opt_net, opt, where))
    if opt_net.get("pretrain_rrdb"):
        load_pretrained_rrdb(net, opt_net["pretrain_rrdb"], where)
    return net
