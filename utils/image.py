"""Image files <-> arrays <-> tensors. Arrays are RGB HxWxC, tensors CxHxW; float images live in [0, 1]."""
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch

ArrayOrTensor = Union[np.ndarray, torch.Tensor]


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Decode an image file to float32 RGB HxWx3 in [0, 1]; grey becomes 3 channels, alpha is dropped.

    Raises ValueError when the file cannot be decoded.
    """
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot decode image {path}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535
    elif img.dtype == np.float32:
        img = np.clip(img, 0, 1)
    else:
        raise ValueError(f"unsupported pixel type {img.dtype} in {path}")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if channels in (3, 4):
        return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB
    raise ValueError(f"unsupported channel count {channels} in {path}")


def img2tensor(img: np.ndarray) -> torch.Tensor:
    """HxWxC array -> float32 CxHxW tensor (values unchanged)."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def tensor2img(tensor: torch.Tensor) -> np.ndarray:
    """Float CxHxW (or 1xCxHxW) tensor in [0, 1] -> uint8 HxWxC array, clamped and rounded."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"tensor2img: expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    return (t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def to_uint8(img: ArrayOrTensor) -> np.ndarray:
    """Any supported image (uint8 HxWxC, float HxWxC array in [0, 1], float CxHxW tensor) -> uint8 HxWxC."""
    if isinstance(img, torch.Tensor):
        return tensor2img(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_image(path: Union[str, Path], img: ArrayOrTensor) -> None:
    """Save an RGB image (see `to_uint8` for the accepted forms), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(img)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]  # cv2 writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
        raise OSError(f"could not write image {path}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma as MATLAB's rgb2ycbcr computes it, unrounded, on the 0..255 scale (16..235).

    `img` is RGB HxWx3, uint8 (0..255) or float (0..1). This is the Y the SR literature measures PSNR/SSIM on.
    """
    rgb = img.astype(np.float64) / 255 if img.dtype == np.uint8 else img.astype(np.float64)
    return rgb @ np.array([65.481, 128.553, 24.966]) + 16.0
