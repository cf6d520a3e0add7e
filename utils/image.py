"""Image files <-> arrays <-> tensors. Arrays are RGB HxWxC, tensors CxHxW; float images live in [0, 1]."""
import io
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
from PIL import Image

from utils.files import atomic_path

ArrayOrTensor = Union[np.ndarray, torch.Tensor]


JPEG_START = b"\xff\xd8\xff"
PNG_START = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last chunk of every complete PNG


def _decode(path: Union[str, Path]) -> np.ndarray:
    """A file's pixels: grey HxW or RGB HxWx3 (alpha dropped); ValueError when it cannot be decoded or is cut short.

    cv2 decodes a truncated JPEG without failing (libjpeg fills the missing part with grey), so JPEGs go through
    PIL, whose full decode raises on missing data (unless a program sets ImageFile.LOAD_TRUNCATED_IMAGES).
    A PNG must end with its IEND chunk; cv2 decodes everything else.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e.strerror or e}") from None
    if data.startswith(JPEG_START):
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot decode image {path}: {e}") from None
    if data.startswith(PNG_START) and PNG_END not in data:
        raise ValueError(f"cannot decode image {path}: the PNG is cut short (no IEND chunk)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot decode image {path}")
    return img[:, :, 2::-1] if img.ndim == 3 and img.shape[2] in (3, 4) else img  # BGR(A) -> RGB


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Decode an image file to float32 RGB HxWx3 in [0, 1]; grey becomes 3 channels, alpha is dropped.

    Raises ValueError when the file cannot be read or decoded, or is cut short (see `_decode`).
    """
    img = _decode(path)
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
    if channels == 3:
        return np.ascontiguousarray(img)
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
    """Save an RGB image (see `to_uint8` for the accepted forms) atomically, creating parent folders: a failed
    write (a full disk) raises OSError and leaves any earlier file at `path` as it was."""
    arr = to_uint8(img)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]  # cv2 writes BGR
    with atomic_path(path) as tmp:  # the temporary name keeps the extension, which picks cv2's format
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(arr)):
            raise OSError(f"could not write image {path}")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma as MATLAB's rgb2ycbcr computes it, unrounded, on the 0..255 scale (16..235).

    `img` is RGB HxWx3, uint8 (0..255) or float (0..1). This is the Y the SR literature measures PSNR/SSIM on.
    """
    rgb = img.astype(np.float64) / 255 if img.dtype == np.uint8 else img.astype(np.float64)
    return rgb @ np.array([65.481, 128.553, 24.966]) + 16.0
