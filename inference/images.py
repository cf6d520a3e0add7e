"""Reading user images for inference, saying when one is converted (grey, alpha) on the way, and resampling them."""
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image

from data.imresize import imresize
from utils.image import read_image

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def conversion_note(path: Union[str, Path]) -> Optional[str]:
    """A note when the file is grey or has an alpha channel, which reading turns into plain RGB."""
    try:
        with Image.open(path) as im:
            mode, info = im.mode, im.info
    except Exception:  # PIL cannot parse the header; decoding will tell whether the file is usable
        return None
    notes = []
    if mode in GREY_MODES:
        notes.append("grey, converted to RGB")
    if mode.endswith("A") or (mode == "P" and "transparency" in info):
        notes.append("alpha channel dropped")
    return f"note: {path}: " + "; ".join(notes) if notes else None


def load_image(path: Union[str, Path], report: Callable[[str], None] = print) -> np.ndarray:
    """RGB float HxWx3 in [0, 1], reporting a conversion; ValueError when the file cannot be decoded."""
    note = conversion_note(path)
    if note:
        report(note)
    return read_image(path)


def resample(img: np.ndarray, factor: float) -> np.ndarray:
    """The image scaled by `factor` (> 1 up, < 1 down) with the MATLAB bicubic the training data is made
    with, clipped to [0, 1]; the playground's --resample-factor (DLAS: bicubic up, area down)."""
    if factor == 1:
        return img
    return np.clip(imresize(img, scale=factor), 0, 1).astype(np.float32)
