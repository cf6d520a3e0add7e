"""Corruptions of the LR image (after downscaling): JPEG, blur, noise, colour, by DLAS's names.

Every corruption takes a float HxWx3 image in [0, 1] and returns a corrupted copy of the same dtype, clipped
to [0, 1]. A named corruption maps a strength in [0, 1] (1 = worst) to its parameters; the strength is drawn
per image and corruption as 1 - cos(u * pi / 2), u uniform, which favours mild corruptions as DLAS does.
All randomness comes from the numpy Generator passed in, so a seeded item is corrupted the same way every time.

| name | parameter at strength 0 .. 1 |
|---|---|
| `none` | nothing |
| `jpeg`, `jpeg-low`, `jpeg-medium`, `jpeg-broad`, `jpeg-normal` | quality 30..10, 25..15, 48..23, 75..15, 82..47 |
| `gaussian_blur` | sigma 0 .. 1.5 * corruption_blur_scale (LR pixels) |
| `gaussian_blur_3` | fixed 3x3 kernel with sigma 3 (the meaning DLAS gave the name) |
| `motion_blur` | a line 1 .. 2 * round(1.5 * corruption_blur_scale) + 1 pixels long (odd: no shift), random angle |
| `noise`, `noise-5` | gaussian noise, std 0 .. 6/255; std 5/255 |
| `gaussian_noise` | gaussian noise, std 1/255 .. 30/255 |
| `poisson_noise` | shot noise, 1000 .. 33 photons at full intensity |
| `color_jitter` | brightness, contrast, saturation factors in 1 +- a, hue shift +- a turns, a = 0 .. 0.2 |
| `color_quantization` | 256 .. 8 levels per channel |
| `saturation` | brightening by 0 .. 0.3 |
| `greyscale` | the channel mean |
| `lq_resampling`, `lq_resampling4x` | down 1x/2x/4x (4x) with a random filter, back up bilinearly |
"""
import math
from typing import Callable, List, Optional, Sequence, Union

import cv2
import numpy as np

from utils.errors import ConfigError
from utils.recipe_keys import NUM, TEXT, Key
from utils.registry import Registry

Rng = Union[np.random.Generator, int, None]  # a Generator, or a seed for a fresh one
Corruption = Callable[[np.ndarray, float, np.random.Generator, float], np.ndarray]  # (img, strength, rng, blur_scale)
# Recipe keys of every dataset mode that degrades its LQ images (and of evaluator datasets).
CORRUPTION_KEYS = {
    "num_corrupts_per_image": Key(int, 0, "corruptions applied to each LQ image (0: none)", at_least=0),
    "corruption_blur_scale": Key(NUM, 1, "strength of the blur corruptions", at_least=0),
    "fixed_corruptions": Key(list, [], "corruptions applied to every image, in order", items=TEXT),
    "random_corruptions": Key(list, [], "names `num_corrupts_per_image` picks from (with replacement); [] = all",
                              items=TEXT),
}
CORRUPTIONS = Registry("corruption")


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at `quality` (1..100)."""
    bgr = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)[:, :, ::-1]
    _, data = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)


def motion_blur(img: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Average along a line `length` pixels long (odd, so the image does not shift) at `angle` degrees,
    as a camera moving while exposed."""
    if length <= 1:
        return img
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2] = 1
    centre = (length // 2, length // 2)
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(centre, angle, 1.0), (length, length))
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def gaussian_noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return img + rng.normal(0, std, img.shape).astype(np.float32)


def poisson_noise(img: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise of a sensor that counts `photons` at full intensity: fewer photons, more noise."""
    return rng.poisson(np.clip(img, 0, 1) * photons).astype(np.float32) / photons


def color_jitter(img: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation scaled by factors in 1 +- amount, hue turned by +- amount turns."""
    if amount <= 0:
        return img
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, 3)
    hue = rng.uniform(-amount, amount)
    out = np.clip(img * brightness, 0, 1)
    mean = _grey(out).mean()
    out = np.clip((out - mean) * contrast + mean, 0, 1)
    grey = _grey(out)
    out = np.clip((out - grey) * saturation + grey, 0, 1)
    hsv = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_RGB2HSV)  # float32: H in degrees
    hsv[..., 0] = (hsv[..., 0] + hue * 360) % 360
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _grey(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]


def _resample(img: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
    if factor == 1:
        return img
    h, w = img.shape[:2]
    mode = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)[rng.integers(4)]
    small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)), interpolation=mode)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _quantize(img: np.ndarray, step: int) -> np.ndarray:
    return np.floor(img * 255 / step) * step / 255


def _register(name: str, fn: Corruption) -> None:
    CORRUPTIONS.register(name)(fn)


JPEG_QUALITIES = {"jpeg": (10, 20), "jpeg-low": (15, 10), "jpeg-medium": (23, 25), "jpeg-broad": (15, 60),
                  "jpeg-normal": (47, 35)}  # DLAS's (lowest quality, span): quality = lowest + (1 - strength) * span

_register("none", lambda img, s, rng, bs: img)
for _name, (_lowest, _span) in JPEG_QUALITIES.items():
    _register(_name, lambda img, s, rng, bs, lo=_lowest, n=_span: jpeg(img, lo + int((1 - s) * n)))
_register("gaussian_blur", lambda img, s, rng, bs: gaussian_blur(img, bs * s * 1.5))
_register("gaussian_blur_3", lambda img, s, rng, bs: cv2.GaussianBlur(img, (3, 3), 3))
_register("motion_blur", lambda img, s, rng, bs: motion_blur(img, 2 * round(bs * s * 1.5) + 1, rng.uniform(0, 360)))
_register("noise", lambda img, s, rng, bs: gaussian_noise(img, s * 6 / 255, rng))
_register("noise-5", lambda img, s, rng, bs: gaussian_noise(img, 5 / 255, rng))
_register("gaussian_noise", lambda img, s, rng, bs: gaussian_noise(img, (1 + 29 * s) / 255, rng))
_register("poisson_noise", lambda img, s, rng, bs: poisson_noise(img, 1000 * 30 ** -s, rng))  # log-uniform
_register("color_jitter", lambda img, s, rng, bs: color_jitter(img, 0.2 * s, rng))
_register("color_quantization", lambda img, s, rng, bs: _quantize(img, 2 ** int(s * 5)))
_register("saturation", lambda img, s, rng, bs: img + 0.3 * s)
_register("greyscale", lambda img, s, rng, bs: np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2))
_register("lq_resampling", lambda img, s, rng, bs: _resample(img, 1 if s < 0.3 else 2 if s < 0.7 else 4, rng))
_register("lq_resampling4x", lambda img, s, rng, bs: _resample(img, 4, rng))


def apply_named(img: np.ndarray, name: str, rng: Rng = None, strength: Optional[float] = None,
                blur_scale: float = 1.0) -> np.ndarray:
    """The corruption `name` at `strength` in [0, 1] (drawn from rng when None); same dtype, clipped to [0, 1].

    An unknown name is a ConfigError listing the known ones.
    """
    if not (isinstance(img, np.ndarray) and np.issubdtype(img.dtype, np.floating) and img.ndim == 3):
        raise TypeError(f"expected a float HxWx3 array in [0, 1], got {getattr(img, 'dtype', type(img))} "
                        f"{getattr(img, 'shape', '')}")
    fn = CORRUPTIONS.get(name)
    rng = np.random.default_rng(rng)
    if strength is None:
        strength = 1 - math.cos(rng.random() * math.pi / 2)
    out = fn(img.astype(np.float32), float(strength), rng, float(blur_scale))
    return np.clip(out, 0, 1).astype(img.dtype, copy=False)


def corrupt(img: np.ndarray, names: Sequence[str], rng: Rng = None, blur_scale: float = 1.0) -> np.ndarray:
    """Apply each named corruption in order, each at a strength drawn from rng."""
    rng = np.random.default_rng(rng)
    for name in names:
        img = apply_named(img, name, rng, blur_scale=blur_scale)
    return img


class Corruptor:
    """A dataset's corruptions (DLAS's keys): `num_corrupts_per_image` picks drawn with replacement from
    `random_corruptions` (all but `none` when empty), then every `fixed_corruptions` name, in order."""

    def __init__(self, opt: dict):
        self.num = opt.get("num_corrupts_per_image") or 0
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 0:
            raise ConfigError(f"`num_corrupts_per_image` must be a non-negative integer, got {self.num!r}")
        self.blur_scale = 1 if opt.get("corruption_blur_scale") is None else opt["corruption_blur_scale"]
        if isinstance(self.blur_scale, bool) or not isinstance(self.blur_scale, (int, float)) or self.blur_scale < 0:
            raise ConfigError(f"`corruption_blur_scale` must be a non-negative number, got {self.blur_scale!r}")
        self.fixed = _names(opt, "fixed_corruptions")
        self.pool = _names(opt, "random_corruptions") or [n for n in CORRUPTIONS.names() if n != "none"]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        picks = [self.pool[i] for i in rng.integers(len(self.pool), size=self.num)]
        return corrupt(img, picks + self.fixed, rng, self.blur_scale)


def build_corruptor(opt: dict) -> Optional[Corruptor]:
    """The Corruptor a dataset's options ask for; None when they ask for no corruption."""
    corruptor = Corruptor(opt)
    return corruptor if corruptor.num or corruptor.fixed else None


def _names(opt: dict, key: str) -> List[str]:
    names = opt.get(key) or []
    if not isinstance(names, (list, tuple)):
        raise ConfigError(f"`{key}` must be a list of corruption names, got {names!r}")
    for name in names:
        CORRUPTIONS.get(str(name), key)
    return [str(n) for n in names]
