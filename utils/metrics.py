"""PSNR and SSIM as the SR literature computes them. Images are quantised to uint8 first (as saved results are).

Two conventions:
- `psnr_y`, `ssim_y`: BasicSR's (test_y_channel=True): MATLAB-style Y on the 0..255 scale, `crop_border`
  pixels removed from every side (usually the SR scale), SSIM with an 11x11 Gaussian window (sigma 1.5).
- `psnr_rgb`, `ssim_rgb`: the official SRFlow code's `Measure` (scikit-image's defaults on uint8 RGB): no
  border crop; SSIM per channel with a 7x7 uniform window, sample covariances and data range 255, averaged.
Accepted inputs: uint8 RGB HxWx3 arrays, float RGB HxWx3 arrays in [0, 1], float CxHxW or 1xCxHxW tensors.
SSIM is undefined on an image smaller than its window: `ssim_y_fits`/`ssim_rgb_fits` tell, and the SSIMs
raise ValueError on one.
"""
from typing import Tuple

import cv2
import numpy as np

from utils.image import ArrayOrTensor, rgb_to_y, to_uint8

SSIM_Y_WINDOW = 11
SSIM_RGB_WINDOW = 7


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")


def _y_pair(sr: ArrayOrTensor, hq: ArrayOrTensor, crop_border: int) -> Tuple[np.ndarray, np.ndarray]:
    a, b = rgb_to_y(to_uint8(sr)), rgb_to_y(to_uint8(hq))
    _same_shape(a, b)
    if 2 * crop_border >= min(a.shape):
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")
    if crop_border:
        inner = (slice(crop_border, -crop_border),) * 2
        a, b = a[inner], b[inner]
    return a, b


def _rgb_pair(sr: ArrayOrTensor, hq: ArrayOrTensor) -> Tuple[np.ndarray, np.ndarray]:
    a, b = to_uint8(sr).astype(np.float64), to_uint8(hq).astype(np.float64)
    _same_shape(a, b)
    return a, b


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float64 arrays on the 0..255 scale (inf for identical ones)."""
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def _mean_ssim(a: np.ndarray, b: np.ndarray, window: np.ndarray, cov_norm: float = 1.0) -> float:
    """Mean SSIM of two 2-D float64 images on the 0..255 scale, over the pixels whose window fits inside.
    `cov_norm` n/(n-1) turns the window's variances into sample variances."""
    side = window.shape[0]
    if min(a.shape) < side:
        raise ValueError(f"a {a.shape[0]}x{a.shape[1]} image is smaller than the {side}x{side} SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    r = side // 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[r:-r, r:-r]  # keep only pixels whose window fits inside

    mu_a, mu_b = blur(a), blur(b)
    var_a = cov_norm * (blur(a * a) - mu_a ** 2)
    var_b = cov_norm * (blur(b * b) - mu_b ** 2)
    cov = cov_norm * (blur(a * b) - mu_a * mu_b)
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim_y_fits(height: int, width: int, crop_border: int = 0) -> bool:
    """Whether `ssim_y` is defined for an image of this size."""
    return min(height, width) - 2 * crop_border >= SSIM_Y_WINDOW


def ssim_rgb_fits(height: int, width: int) -> bool:
    """Whether `ssim_rgb` is defined for an image of this size."""
    return min(height, width) >= SSIM_RGB_WINDOW


def psnr_y(sr: ArrayOrTensor, hq: ArrayOrTensor, crop_border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB on Y (inf for identical images)."""
    return _psnr(*_y_pair(sr, hq, crop_border))


def ssim_y(sr: ArrayOrTensor, hq: ArrayOrTensor, crop_border: int = 0) -> float:
    """Mean SSIM on Y: 11x11 Gaussian window (sigma 1.5), averaged over the window-valid region."""
    g = cv2.getGaussianKernel(SSIM_Y_WINDOW, 1.5)
    return _mean_ssim(*_y_pair(sr, hq, crop_border), g @ g.T)


def psnr_rgb(sr: ArrayOrTensor, hq: ArrayOrTensor) -> float:
    """PSNR in dB over the uint8 RGB values, data range 255 (skimage's peak_signal_noise_ratio on uint8)."""
    return _psnr(*_rgb_pair(sr, hq))


def ssim_rgb(sr: ArrayOrTensor, hq: ArrayOrTensor) -> float:
    """SSIM as skimage's structural_similarity(sr, hq, channel_axis=-1) on uint8 computes it (SRFlow's
    `multichannel=True`): each channel with a 7x7 uniform window and sample covariances, then averaged."""
    a, b = _rgb_pair(sr, hq)
    n = SSIM_RGB_WINDOW ** 2
    window = np.full((SSIM_RGB_WINDOW, SSIM_RGB_WINDOW), 1.0 / n)
    return float(np.mean([_mean_ssim(a[..., c], b[..., c], window, n / (n - 1)) for c in range(a.shape[2])]))
