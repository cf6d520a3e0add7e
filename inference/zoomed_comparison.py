"""A comparison picture of one photo: labelled whole images side by side (bicubic | SR ... | HQ) over the same
window of each, enlarged, so that the difference shows at a glance. Built on inference/pictures.py's strips.
"""
from pathlib import Path
from typing import Sequence, Tuple

import cv2
import numpy as np

from inference.pictures import Panel, write_strip
from utils.image import rgb_to_y

ZOOM = 4  # the window is 1/ZOOM of the image a side, shown ZOOM times larger (nearest neighbour)
BOX_COLOUR = (255, 0, 0)
Box = Tuple[int, int, int, int]  # top, left, height, width


def _gradient(img: np.ndarray) -> np.ndarray:
    """|d/dx| + |d/dy| of Y (0..255 scale), central differences, per pixel."""
    y = rgb_to_y(img)
    return np.abs(cv2.Sobel(y, cv2.CV_64F, 1, 0, ksize=1)) + np.abs(cv2.Sobel(y, cv2.CV_64F, 0, 1, ksize=1))


def detail(img: np.ndarray) -> float:
    """How much fine structure a uint8 RGB image has: its mean Y gradient. Blur lowers it, sharpening raises it."""
    return float(_gradient(img).mean())


def detail_box(hq: np.ndarray, zoom: int = ZOOM) -> Box:
    """The window of 1/zoom of the image a side where the HQ photo has the most detail (largest mean gradient
    of Y). Chosen from HQ alone, so it favours no method."""
    gradient = _gradient(hq)
    h, w = gradient.shape[0] // zoom, gradient.shape[1] // zoom
    total = cv2.integral(gradient)  # (H+1) x (W+1): any window's sum in four look-ups
    sums = total[h:, w:] - total[:-h, w:] - total[h:, :-w] + total[:-h, :-w]
    top, left = np.unravel_index(np.argmax(sums), sums.shape)
    return int(top), int(left), h, w


def _framed(img: np.ndarray, box: Box) -> np.ndarray:
    top, left, h, w = box
    thickness = max(1, max(img.shape[:2]) // 200)
    return cv2.rectangle(img.copy(), (left, top), (left + w - 1, top + h - 1), BOX_COLOUR, thickness)


def _enlarged(img: np.ndarray, box: Box, zoom: int) -> np.ndarray:
    """The window, `zoom` times larger, on a white canvas of the whole image's size."""
    top, left, h, w = box
    window = np.repeat(np.repeat(img[top:top + h, left:left + w], zoom, axis=0), zoom, axis=1)
    canvas = np.full_like(img, 255)
    canvas[:window.shape[0], :window.shape[1]] = window
    return canvas


def zoomed_rows(panels: Sequence[Panel], zoom: int = ZOOM) -> Tuple[list, Box]:
    """Two rows: the panels (all of the last panel's size, the HQ) with the window framed, then the window of each
    enlarged and labelled `zoom xN`. Returns the rows and the window."""
    box = detail_box(panels[-1][2], zoom)
    whole = [(first, second, _framed(img, box)) for first, second, img in panels]
    near = [(f"{first} (zoom x{zoom})", second, _enlarged(img, box, zoom)) for first, second, img in panels]
    return [whole, near], box


def write_zoomed_comparison(path: Path, panels: Sequence[Panel], zoom: int = ZOOM) -> Path:
    """Write the picture of `zoomed_rows` (atomically) and return its path."""
    rows, _ = zoomed_rows(panels, zoom)
    write_strip(Path(path), rows)
    return Path(path)
