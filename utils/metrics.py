"""PSNR and SSIM on the Y channel, computed as the SR literature does (BasicSR with test_y_channel=True).

Images are quantised to uint8 first (as saved results would be), converted to MATLAB-style Y on the
0..255 scale, and `crop_border` pixels are removed from every side (usually the SR scale).
Accepted inputs: uint8 RGB HxWx3 arrays, float RGB HxWx3 arrays in [0, 1], float CxHxW or 1xCxHxW tensors.
"""
import cv2
import numpy as np

from utils.image import ArrayOrTensor, rgb_to_y, to_uint8


def _y_pair(sr: ArrayOrTensor, hq: ArrayOrTensor, crop_border: int):
    a, b = rgb_to_y(to_uint8(sr)), rgb_to_y(to_uint8(hq))
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    if crop_border:
        inner = (slice(crop_border, -crop_border),) * 2
        a, b = a[inner], b[inner]
    return a, b


def psnr_y(sr: ArrayOrTensor, hq: ArrayOrTensor, crop_border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB on Y (inf for identical images)."""
    a, b = _y_pair(sr, hq, crop_border)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim_y(sr: ArrayOrTensor, hq: ArrayOrTensor, crop_border: int = 0) -> float:
    """Mean SSIM on Y: 11x11 Gaussian window (sigma 1.5), averaged over the window-valid region."""
    a, b = _y_pair(sr, hq, crop_border)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = cv2.getGaussianKernel(11, 1.5)
    window = g @ g.T

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]  # keep only pixels whose window fits inside

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
