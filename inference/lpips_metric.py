"""LPIPS, when the optional `lpips` package and AlexNet's weights are already on this machine.

Nothing downloads at run time: without them, test.py reports PSNR/SSIM only and says why.
"""
import warnings
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

Metric = Callable[[torch.Tensor, torch.Tensor], float]


def load_lpips(device: torch.device) -> Tuple[Optional[Metric], str]:
    """(metric on 1x3xHxW images in [0, 1], '') or (None, why it is unavailable)."""
    try:
        import lpips
    except ImportError:
        return None, "LPIPS skipped: the optional `lpips` package is not installed (pip install lpips)"
    from torchvision.models import AlexNet_Weights
    url = AlexNet_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not cached.is_file():
        return None, f"LPIPS skipped: it needs AlexNet's weights at {cached} ({url}), and nothing downloads here"
    with warnings.catch_warnings():  # lpips asks torchvision for AlexNet in a deprecated way; not the user's to fix
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    def metric(sr: torch.Tensor, hq: torch.Tensor) -> float:
        with torch.no_grad():
            return float(model(sr.to(device) * 2 - 1, hq.to(device) * 2 - 1).mean())
    return metric, ""
