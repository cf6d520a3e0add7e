"""Degradations for trying restoration (blur, noise, JPEG), with the training pipeline's own code."""
import math
from typing import Optional

import numpy as np

from data.degradations import gaussian_blur, gaussian_noise, jpeg as jpeg_roundtrip
from utils.errors import ConfigError


def check_corruption(jpeg: Optional[int] = None, blur: Optional[float] = None,
                     noise: Optional[float] = None) -> None:
    """ConfigError unless the JPEG quality is 1..100 and the blur sigma and noise std finite and >= 0."""
    if jpeg is not None and not 1 <= jpeg <= 100:
        raise ConfigError(f"JPEG quality must be 1..100, got {jpeg}")
    for value in (blur, noise):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"blur sigma and noise std must be finite and >= 0, got {blur} and {noise}")


def corrupt(img: np.ndarray, jpeg: Optional[int] = None, blur: Optional[float] = None,
            noise: Optional[float] = None, seed: int = 0) -> np.ndarray:
    """RGB float HxWx3 in [0, 1] -> degraded copy: blur (sigma in pixels), then noise (std on the [0, 1]
    scale), then JPEG at quality 1..100, the order in which a camera and an upload apply them."""
    check_corruption(jpeg, blur, noise)
    out = img.astype(np.float32)
    if blur:
        out = gaussian_blur(out, blur)
    if noise:
        out = np.clip(gaussian_noise(out, noise, np.random.default_rng(seed)), 0, 1)
    if jpeg is not None:
        out = jpeg_roundtrip(out, jpeg)
    return np.ascontiguousarray(out, dtype=np.float32)
