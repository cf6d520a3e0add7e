"""The demos' closing pictures: each validation photo of a recipe as bicubic | the networks' SR | HQ, with a
zoomed window (inference/zoomed_comparison.py), and one printed line per photo with every panel's Y-PSNR.

A plain SR network gives one panel; SRFlow gives one per temperature of the recipe's `val.heats` (`val.samples`
samples above 0), each labelled with its Y-PSNR and its detail (mean |gradient| of Y, 0..255 scale: a sharper
image has more), so "the samples are sharper than the mean image" can be read off as a number too.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from data import build_dataset
from data.lr_consistency import lr_psnr
from inference.sr import conditioning
from inference.versus_bicubic import bicubic_up, sr_image
from inference.zoomed_comparison import detail, write_zoomed_comparison
from models import is_flow
from utils.image import to_uint8
from utils.metrics import psnr_y


class Contender(NamedTuple):
    label: str
    net: nn.Module
    temperature: Optional[float]  # None for a plain SR network
    samples: int


def contenders(label: str, net: nn.Module, opt: Dict[str, Any]) -> List[Contender]:
    """One entry for a plain network; for SRFlow one per `val.heats` temperature, `val.samples` above 0."""
    if not is_flow(net):
        return [Contender(label, net, None, 1)]
    return [Contender(f"{label} t={t:g}", net, float(t), 1 if t == 0 else opt["val"]["samples"])
            for t in opt["val"]["heats"]]


def _panels(entries: Sequence[Contender], lq: torch.Tensor, hq: np.ndarray, scale: int, device: torch.device,
            name: str) -> List[tuple]:
    """(label, uint8 image) for bicubic, every contender's samples, and HQ; one RRDB pass per network."""
    panels = [("bicubic", bicubic_up(lq, scale))]
    passes: Dict[int, Optional[tuple]] = {}
    for entry in entries:
        if id(entry.net) not in passes:
            passes[id(entry.net)] = conditioning(entry.net, lq[None].to(device))
        for k in range(entry.samples):
            suffix = f" #{k + 1}" if entry.samples > 1 else ""
            panels.append((entry.label + suffix, sr_image(entry.net, lq, device, entry.temperature, name,
                                                          passes[id(entry.net)])))
    return panels + [("HQ", hq)]


def showcase(entries: Sequence[Contender], opt: Dict[str, Any], out_dir: Path,
             device: torch.device = torch.device("cpu"), with_lr_psnr: bool = False) -> List[str]:
    """Write `out_dir/<photo>.png` for each photo of the recipe's `datasets.val` (its LR made as validation makes
    it) and return the lines to print: per photo every panel's Y-PSNR and the picture's path, then the means
    of the PSNRs and of the details (and of the LR-PSNRs, the NTIRE 2021 consistency with the LR input, with
    `with_lr_psnr`)."""
    dataset = build_dataset(opt["datasets"]["val"], opt, "val")
    scale = opt["scale"]
    torch.manual_seed(opt["manual_seed"])  # the same samples at every run
    lines: List[str] = []
    psnrs: Dict[str, List[float]] = {}
    details: Dict[str, List[float]] = {}
    lr_psnrs: Dict[str, List[float]] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        name = Path(item["hq_path"]).stem
        hq = to_uint8(item["hq"])
        panels = _panels(entries, item["lq"], hq, scale, device, name)
        photo = {label: psnr_y(img, hq, scale) for label, img in panels[:-1]}  # HQ, the last, is the reference
        consistency = {label: lr_psnr(img, hq, scale) for label, img in panels[:-1]} if with_lr_psnr else {}
        sharpness = {label: detail(img) for label, img in panels}
        path = write_zoomed_comparison(Path(out_dir) / f"{name}.png", [
            (label, (f"{photo[label]:.2f} dB, " if label in photo else "")
             + (f"LR {consistency[label]:.1f} dB, " if label in consistency else "")
             + f"detail {sharpness[label]:.1f}", img)
            for label, img in panels])
        for label in sharpness:
            details.setdefault(label, []).append(sharpness[label])
            if label in photo:
                psnrs.setdefault(label, []).append(photo[label])
            if label in consistency:
                lr_psnrs.setdefault(label, []).append(consistency[label])
        lines.append(f"  {name}: " + _scored(photo) + f"; picture: {path}")
    mean = lambda values: math.fsum(values) / len(values)
    lines.append(f"  mean of {len(dataset)}: " + _scored({k: mean(v) for k, v in psnrs.items()}))
    if lr_psnrs:
        lines.append("  mean LR-PSNR (SR downscaled against the LR; >= 45 dB is consistent): "
                     + ", ".join(f"{k} {mean(v):.2f} dB" for k, v in lr_psnrs.items()))
    lines.append("  mean detail (|gradient| of Y; sharper is higher): "
                 + ", ".join(f"{k} {mean(v):.1f}" for k, v in details.items()))
    return lines


def compare_networks(networks: Sequence[Tuple[str, Dict[str, Any], Path]], out_dir: Path,
                     with_lr_psnr: bool = False) -> List[str]:
    """`showcase` of several trained networks, (label, training recipe, weights) each, on the validation photos
    of the last recipe; each SRFlow at its own recipe's `val.heats`."""
    from inference.model import load_generator, pick_device
    device = pick_device(networks[-1][1])
    entries: List[Contender] = []
    for label, opt, weights in networks:
        net, _ = load_generator(opt, str(weights), device)
        entries += contenders(label, net, opt)
    return showcase(entries, networks[-1][1], out_dir, device, with_lr_psnr)


def _scored(psnrs: Dict[str, float]) -> str:
    """`bicubic 28.10 dB, SR 28.95 dB (+0.85)`: each PSNR after the first with its gain over it."""
    base = next(iter(psnrs.values()))
    parts = [f"{label} {value:.2f} dB" + ("" if i == 0 else f" ({value - base:+.2f})")
             for i, (label, value) in enumerate(psnrs.items())]
    return ", ".join(parts)
