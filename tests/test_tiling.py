"""Tiled super-resolution (test.py --tile): the untiled image wherever a tile sees all an output pixel
depends on, and a peak memory that grows with the image by the output alone."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from conftest import ROOT, randomize, tiny_srflow_recipe
from inference.model import parse_inference_options
from inference.sr import super_resolve
from models import build_network
from utils import precision
from utils.metrics import psnr_y


class PeakTensorBytes(TorchDispatchMode):
    """The most bytes of CPU tensors made inside the `with` block that were alive at once, and the largest
    single one: what a tiled pass holds, counted exactly and cheaply instead of through the process's RSS."""

    def __init__(self):
        super().__init__()
        self.live = {}  # storage id -> (weak reference, bytes)
        self.peak = self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                if storage._cdata not in self.live:  # views and in-place results share a storage
                    self.live[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
                    self.largest = max(self.largest, storage.nbytes())
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


class NearestUp(nn.Module):
    """A 'network' whose every output pixel depends on one LR pixel: tiling must not change any of them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="nearest")


@pytest.fixture(scope="module")
def flow_net(image_dirs, tmp_path_factory):
    opt = parse_inference_options(tiny_srflow_recipe(image_dirs, tmp_path_factory.mktemp("tiling")))
    return randomize(build_network(opt["networks"]["generator"], opt))


def test_blending_weights_sum_to_one_over_overlapping_tiles():
    lq = torch.rand(1, 3, 23, 37)  # odd sides: tiles overlap by different amounts at the ends
    whole = super_resolve(NearestUp(), lq).image
    for tile, overlap in ((10, 4), (8, 0), (16, 8)):
        assert torch.allclose(super_resolve(NearestUp(), lq, tile=tile, overlap=overlap).image, whole, atol=1e-6)


def test_tiled_srflow_equals_untiled_outside_the_overlaps(flow_net):
    """Tiles [0, 40) and [24, 64) of a 64-pixel-wide LR: columns 0..23 come from the first tile alone, whose
    edge is 16 LR pixels away, beyond the tiny net's reach (about 12); likewise columns 40..63."""
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 24, 64)
    whole = super_resolve(flow_net, lq, 0.0).image
    tiled = super_resolve(flow_net, lq, 0.0, tile=40, overlap=16).image
    assert tiled.shape == whole.shape == (1, 3, 96, 256)
    for cols in (slice(0, 96), slice(160, 256)):
        assert torch.allclose(tiled[..., cols], whole[..., cols], atol=1e-5)
    assert not torch.allclose(tiled[..., 96:160], whole[..., 96:160], atol=1e-5)  # tile edges within reach
    assert psnr_y(tiled[0], whole[0]) > 40


def test_tiling_holds_one_tile_besides_the_output(flow_net):
    peaks = {}
    for side in (32, 40):
        lq = torch.rand(1, 3, side, side)
        for tile in (0, 16):
            with PeakTensorBytes() as tracker:
                image = super_resolve(flow_net, lq, 0.0, tile=tile, overlap=4).image
            peaks[side, tile] = (tracker.peak, tracker.largest, image.numel() * image.element_size())
    for side in (32, 40):
        peak, largest, output = peaks[side, 16]
        assert largest <= output  # nothing larger than the image itself
        assert peak < peaks[side, 0][0] / 2
    per_tile = [peaks[side, 16][0] - peaks[side, 16][2] for side in (32, 40)]
    assert abs(per_tile[1] - per_tile[0]) < 0.1 * per_tile[0]  # beyond the output, the same for any image
    assert peaks[40, 0][0] > 1.3 * peaks[32, 0][0]  # while untiled, the peak grows with the area


def test_bench_tile_memory_prints_a_row_per_tile_and_precision():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tile_memory.py"), "--hr", "128x96",
                          "--tiles", "0", "16", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("options/demo/srflow.yml: HR 128x96"))
    assert lines[start + 1].startswith("machine: ") and "native bf16: " in lines[start + 1]
    assert "peak GiB" in lines[start + 2] and "precision" in lines[start + 2]
    rows = [line.split() for line in lines[start + 3:]]
    precisions = ["float32", "bf16"] if precision.cpu_bf16_feature() else ["float32"]  # else a note says why
    assert [r[:2] for r in rows] == [[tile, p] for tile in ("whole", "16") for p in precisions]
    for row in rows:
        peak, added, seconds, cpu_seconds = map(float, row[2:])
        assert peak > 0 and 0 <= added <= peak and seconds > 0 and cpu_seconds > 0
