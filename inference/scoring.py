"""The numbers test.py reports for one SR image, and for the samples of one image at one temperature.

Everything is computed on the uint8 RGB arrays that are written as PNGs, so each number can be recomputed
from the files.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from data.lr_consistency import lr_psnr
from inference.lpips_metric import LPIPS, MIN_SIDE, lpips_fits
from utils.metrics import (SSIM_RGB_WINDOW, SSIM_Y_WINDOW, psnr_rgb, psnr_y, ssim_rgb, ssim_rgb_fits, ssim_y,
                           ssim_y_fits)

Scores = Dict[str, Any]


def score(sr: np.ndarray, hq: np.ndarray, scale: int, crop_border: int,
          lpips: Optional[LPIPS] = None) -> Tuple[Scores, List[str]]:
    """(metrics of a uint8 SR image against its uint8 HQ, notes on the metrics an image this small lacks)."""
    h, w = hq.shape[:2]
    scores: Scores = {"psnr_y": psnr_y(sr, hq, crop_border), "psnr_rgb": psnr_rgb(sr, hq),
                      "lr_psnr": lr_psnr(sr, hq, scale)}
    notes = []
    if ssim_y_fits(h, w, crop_border):
        scores["ssim_y"] = ssim_y(sr, hq, crop_border)
    else:
        notes.append(f"ssim_y (needs {SSIM_Y_WINDOW} pixels a side after cropping {crop_border})")
    if ssim_rgb_fits(h, w):
        scores["ssim_rgb"] = ssim_rgb(sr, hq)
    else:
        notes.append(f"ssim_rgb (needs {SSIM_RGB_WINDOW} pixels a side)")
    if lpips is not None:
        if lpips_fits(h, w):
            scores["lpips"] = lpips.distance(sr, hq)
        else:
            notes.append(f"lpips (needs {MIN_SIDE} pixels a side)")
    return scores, notes


def std_map(samples: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel standard deviation across samples (population, 0..255), HxWx3 float64."""
    return np.stack([s.astype(np.float64) for s in samples]).std(axis=0)


def sample_statistics(samples: Sequence[np.ndarray], hq: Optional[np.ndarray] = None,
                      lpips: Optional[LPIPS] = None) -> Scores:
    """`sample_std`, the mean of `std_map`, and with LPIPS and HQ the challenge's diversity score: the
    global best is the smallest mean LPIPS of a sample, the local best the mean over pixels of the smallest
    LPIPS of any sample there; diversity = (global - local) / global * 100."""
    stats: Scores = {"samples": len(samples), "sample_std": float(std_map(samples).mean())}
    if lpips is None or hq is None or not lpips_fits(*hq.shape[:2]):
        return stats
    maps = torch.stack([lpips.spatial_map(s, hq).double() for s in samples])
    global_best = float(maps.mean(dim=(1, 2)).min())
    local_best = float(maps.min(dim=0).values.mean())
    stats.update(lpips_global_best=global_best, lpips_local_best=local_best,
                 diversity=(global_best - local_best) / global_best * 100 if global_best > 0 else 0.0)
    return stats
