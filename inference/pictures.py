"""Pictures where a person would rather look than read: labelled comparison strips of one image's results,
test.py's temperature sweep, and the validation NLL across the pipeline's stages. Written atomically."""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from utils.image import write_image

Panel = Tuple[str, str, np.ndarray]  # (first label line, second label line, uint8 RGB HxWx3)
PANEL_SIDES = (192, 512)  # panels are scaled so that their longer side falls in this range
LABEL_HEIGHT = 36


def _fit(img: np.ndarray) -> np.ndarray:
    """Scale a panel into PANEL_SIDES: nearest-neighbour up (pixels stay visible), area averaging down."""
    side = max(img.shape[:2])
    if side < PANEL_SIDES[0]:
        k = -(-PANEL_SIDES[0] // side)
        return np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    if side > PANEL_SIDES[1]:
        f = PANEL_SIDES[1] / side
        return cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
    return img


def _labelled(panel: Panel) -> np.ndarray:
    first, second, img = panel
    img = _fit(img)
    band = np.full((LABEL_HEIGHT, img.shape[1], 3), 255, np.uint8)
    for row, text in enumerate((first, second)):
        cv2.putText(band, text, (4, 15 + 16 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, img])


def heat_map(values: np.ndarray) -> Tuple[np.ndarray, float]:
    """A HxW map as a uint8 RGB picture (inferno, 0 .. its maximum), and that maximum."""
    top = float(values.max())
    scaled = np.zeros(values.shape, np.uint8) if top <= 0 else np.round(values / top * 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[..., ::-1], top


def comparison_strip(rows: Sequence[Sequence[Panel]]) -> np.ndarray:
    """Rows of labelled panels (all of one image's size) on a white grid; short rows are padded."""
    from torchvision.utils import make_grid  # here: importing torchvision costs every start ~2 s
    labelled = [[_labelled(p) for p in row] for row in rows]
    columns = max(len(row) for row in labelled)
    blank = np.full_like(labelled[0][0], 255)
    tiles = [torch.from_numpy(t.copy()).permute(2, 0, 1) for row in labelled
             for t in list(row) + [blank] * (columns - len(row))]
    grid = make_grid(torch.stack(tiles).float() / 255, nrow=columns, padding=4, pad_value=1)
    return (grid * 255).round().byte().permute(1, 2, 0).numpy()


def write_strip(path: Path, rows: Sequence[Sequence[Panel]]) -> None:
    write_image(path, comparison_strip(rows))


def _figure(panels: int):
    import matplotlib
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), dpi=110, squeeze=False, sharex=True)
    return fig, list(axes[0])


def save_figure(fig, path: Path, tensorboard_dir: Optional[Path] = None, tag: str = "") -> None:
    """Draw the figure once, write it as a PNG (atomically) and, when given a folder, to TensorBoard there."""
    import matplotlib.pyplot as plt
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    write_image(path, picture)
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(str(tensorboard_dir)) as writer:
            writer.add_image(tag, picture, dataformats="HWC")


def sweep_figure(summary: Sequence[Dict[str, str]]):
    """test.py's summary against temperature: PSNR, LR-PSNR, LPIPS (when measured), diversity; None when
    there is nothing to draw (no HQ images and one sample)."""
    t = [float(r["temperature"]) for r in summary]
    series = lambda key: [float(r[key]) if r.get(key, "") != "" else np.nan for r in summary]
    panels: List[Tuple[str, List[Tuple[str, str]]]] = [
        ("PSNR (dB)", [("psnr_y", "Y, cropped"), ("psnr_rgb", "RGB")]),
        ("LR-PSNR (dB)", [("lr_psnr", "mean"), ("lr_psnr_worst", "worst sample")]),
        ("LPIPS (lower is closer)", [("lpips", "mean")]),
        ("diversity score (%)", [("diversity", "(global - local best) / global")]),
        ("sample std (0-255)", [("sample_std", "mean per-pixel std")])]
    panels = [(title, [(k, label) for k, label in lines if not np.isnan(series(k)).all()]) for title, lines in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (title, lines) in zip(axes, panels):
        for key, label in lines:
            ax.plot(t, series(key), "o-", label=label)
        ax.set_title(title)
        ax.set_xlabel("temperature")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def nll_figure(stages: Sequence[Tuple[str, int, List[Tuple[int, float]]]]):
    """Validation NLL (bits/dim) over the iterations of consecutive stages: (name, iterations, [(iter, nll)])."""
    fig, (ax,) = _figure(1)
    fig.set_size_inches(7.5, 4)
    start = 0
    for name, iterations, points in stages:
        if points:
            ax.plot([start + i for i, _ in points], [v for _, v in points], "o-", markersize=3, label=name)
        ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        ax.text(start, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        start += iterations
    ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("iteration (stages one after another)")
    ax.set_ylabel("validation NLL (bits/dim)")
    ax.grid(alpha=0.3)
    if any(points for _, _, points in stages):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
