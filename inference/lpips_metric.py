"""LPIPS (AlexNet, v0.1), when the optional `lpips` package is installed.

Its AlexNet weights come through torchvision's own cache (torch.hub's `checkpoints/` folder): torchvision
downloads them there on first use when the machine is online, as any torchvision user expects. When they
cannot be had (offline and not cached), test.py says so in one line and goes on without the column.
"""
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

MIN_SIDE = 31  # AlexNet's second max-pooling needs a feature map of 3, i.e. 31 input pixels a side
DOWNLOAD_TIMEOUT_S = 60  # a firewalled machine otherwise waits minutes for the connection to fail


def alexnet_cache_path() -> Path:
    """Where torchvision keeps (or would download) the AlexNet weights LPIPS uses."""
    from torchvision.models import AlexNet_Weights
    return Path(torch.hub.get_dir()) / "checkpoints" / AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]


def lpips_fits(height: int, width: int) -> bool:
    """Whether LPIPS is defined for an image of this size."""
    return min(height, width) >= MIN_SIDE


class LPIPS:
    """LPIPS of uint8 RGB HxWx3 images: SRFlow Measure's mean distance and the challenge's per-pixel map."""

    def __init__(self, distance_net: torch.nn.Module, spatial_net: torch.nn.Module, device: torch.device):
        self.distance_net, self.spatial_net, self.device = distance_net, spatial_net, device

    def _pair(self, sr: np.ndarray, hq: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        def to_tensor(img: np.ndarray) -> torch.Tensor:  # as Measure.py: uint8 / 127.5 - 1
            chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            return chw[None].float().to(self.device) / 127.5 - 1
        return to_tensor(sr), to_tensor(hq)

    @torch.no_grad()
    def distance(self, sr: np.ndarray, hq: np.ndarray) -> float:
        """The mean LPIPS distance (SRFlow's Measure; lower is closer)."""
        return float(self.distance_net(*self._pair(sr, hq)).mean())

    @torch.no_grad()
    def spatial_map(self, sr: np.ndarray, hq: np.ndarray) -> torch.Tensor:
        """The HxW map of LPIPS(spatial=True), as the challenge's diversity score uses it (on the CPU)."""
        return self.spatial_net(*self._pair(sr, hq))[0, 0].float().cpu()


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_lpips(device: torch.device) -> Tuple[Optional[LPIPS], str]:
    """(LPIPS, '') or (None, one line saying why it is unavailable). torchvision announces a download itself."""
    try:
        import lpips
    except ImportError:
        return None, "LPIPS skipped: the optional `lpips` package is not installed (pip install lpips)"
    cached = alexnet_cache_path()
    try:
        with warnings.catch_warnings(), _socket_timeout(DOWNLOAD_TIMEOUT_S):
            warnings.simplefilter("ignore", UserWarning)  # lpips asks torchvision for AlexNet in a deprecated way
            nets = [lpips.LPIPS(net="alex", spatial=spatial, verbose=False).to(device).eval()
                    for spatial in (False, True)]
    except Exception as e:  # the package's loading fails in many ways (offline, a torn file); none is fatal here
        where = "could not be downloaded" if not cached.is_file() else "could not be loaded"
        return None, (f"LPIPS skipped: AlexNet's weights {where} ({type(e).__name__}: {e}); "
                      f"torchvision keeps them at {cached}")
    return LPIPS(nets[0], nets[1], device), ""
