"""Random flips and rotations applied identically to several images, so an HQ crop and its LQ stay aligned."""
from typing import Iterable, List

import numpy as np


def flip_and_rotate(images: Iterable[np.ndarray], rng: np.random.Generator, flip: bool,
                    rot: bool) -> List[np.ndarray]:
    """Horizontal and vertical flips (`flip`) and a transpose (`rot`), each with probability 1/2, the same draws
    for every image; together they give all 8 rotations and reflections. Returns contiguous HxWxC arrays."""
    images = list(images)
    if flip and rng.random() < 0.5:
        images = [img[:, ::-1] for img in images]
    if flip and rng.random() < 0.5:
        images = [img[::-1] for img in images]
    if rot and rng.random() < 0.5:
        images = [img.transpose(1, 0, 2) for img in images]
    return [np.ascontiguousarray(img) for img in images]
