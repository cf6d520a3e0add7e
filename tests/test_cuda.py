"""The code's CUDA branches, on a GPU: autocast (bf16, and fp16 with its GradScaler), channels_last, NCCL under
torchrun, tiling, train.compile and the two-network GAN training. Marked `cuda` (run with `pytest -m cuda`, as
scripts/gpu_check.sh does); skipped without CUDA."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, randomize, tiny_rrdb_recipe, tiny_srflow_recipe
from test_esrgan import REFERENCE_RECIPE, all_weights, assert_each_network_learned
from test_esrgan import esrgan_images, vgg_weights  # noqa: F401  (fixtures)
from test_esrgan import tiny as tiny_esrgan
from inference.model import parse_inference_options
from inference.sr import super_resolve
from models import build_network
from trainer.trainer import Trainer
from utils.options import parse_options

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


def on_gpu(recipe: dict, **top) -> dict:
    recipe.update(gpu_ids=[0], **top)
    return recipe


def trained_copy(trainer: Trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.networks["generator"].state_dict().items()}


def fit_and_check_it_learned(trainer: Trainer) -> None:
    before = trained_copy(trainer)
    trainer.fit()
    after = trainer.networks["generator"].state_dict()
    assert not trainer.nan_skips  # no step ended on a run of non-finite losses (counted per step)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_fp16_true_trains_srflow_under_bf16_autocast(image_dirs, tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    trainer = Trainer(parse_options(on_gpu(tiny_srflow_recipe(image_dirs, tmp_path, niter=4, val_freq=4),
                                           fp16=True)))
    assert trainer.device.type == "cuda" and trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    fit_and_check_it_learned(trainer)
    assert trainer.metrics_history  # validation ran under the same settings


def test_float16_gets_a_grad_scaler_that_steps(image_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # as on a GPU without bf16
    trainer = Trainer(parse_options(on_gpu(tiny_rrdb_recipe(image_dirs, tmp_path, niter=6, val_freq=100),
                                           fp16=True)))
    assert trainer.amp_dtype == torch.float16 and trainer.scaler is not None
    fit_and_check_it_learned(trainer)
    assert 0 < trainer.scaler.get_scale() < float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_computes_what_contiguous_does_on_cuda(image_dirs, tmp_path, dtype, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 is compared in float32
    nets = {}
    for layout in (False, True):
        opt = parse_inference_options({**tiny_srflow_recipe(image_dirs, tmp_path), "channels_last": layout})
        nets[layout] = randomize(build_network(opt["networks"]["generator"], opt)).cuda()
    hr = torch.rand(2, 3, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    out = {}
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        for layout, net in nets.items():
            _, nll, _ = net(gt=hr, lr=lr, add_gt_noise=False)
            out[layout] = nll.float()
    tol = 1e-4 if dtype == torch.float32 else 0.2  # bf16 round-off differs between the layouts' kernels
    torch.testing.assert_close(out[True], out[False], rtol=tol, atol=tol)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_torchrun_one_process_trains_over_nccl(image_dirs, tmp_path):
    path = tmp_path / "nccl.yml"
    path.write_text(yaml.safe_dump(on_gpu(tiny_rrdb_recipe(image_dirs, tmp_path / "run", niter=4, val_freq=4))))
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=1", str(ROOT / "train.py"), "-opt", str(path),
                          "--launcher", "pytorch"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "NCCL_DEBUG": "INFO"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "NCCL" in run.stdout + run.stderr  # the process group is NCCL's, not gloo's
    assert (tmp_path / "run" / "models" / "4_generator.pth").is_file()


def test_tiled_decode_on_cuda_matches_untiled_away_from_the_seams(image_dirs, tmp_path):
    opt = parse_inference_options(tiny_srflow_recipe(image_dirs, tmp_path))
    net = randomize(build_network(opt["networks"]["generator"], opt)).cuda()
    lq = torch.rand(1, 3, 24, 64, generator=torch.Generator().manual_seed(0)).cuda()
    whole = super_resolve(net, lq, 0.0, report=lambda _: None).image
    tiled = super_resolve(net, lq, 0.0, tile=40, overlap=16, report=lambda _: None).image
    assert tiled.is_cuda and tiled.shape == whole.shape == (1, 3, 96, 256)
    for cols in (slice(0, 96), slice(160, 256)):  # columns a single tile sees whole (as tests/test_tiling.py)
        torch.testing.assert_close(tiled[..., cols], whole[..., cols], rtol=0, atol=1e-2)  # TF32 convolutions


def test_train_compile_trains(image_dirs, tmp_path):
    # The RRDB compiles in seconds; the full SRFlow under train.compile is timed by scripts/gpu_check.sh.
    recipe = on_gpu(tiny_rrdb_recipe(image_dirs, tmp_path, niter=3, val_freq=3, compile=True))
    trainer = Trainer(parse_options(recipe))
    fit_and_check_it_learned(trainer)
    assert trainer.metrics_history


@pytest.mark.parametrize("half", ["bf16", "float16"])
def test_fp16_trains_the_two_esrgan_networks(esrgan_images, vgg_weights, tmp_path, half, monkeypatch):
    """DLAS's ESRGAN recipe under fp16: the discriminator's step and the generator's (its GAN loss through the
    frozen discriminator) each learn; float16 shares one GradScaler, which stays finite."""
    if half == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    if half == "float16":
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # as on a GPU without bf16
    sets = tiny_esrgan(esrgan_images, tmp_path, vgg_weights, REFERENCE_RECIPE, niter=6)
    trainer = Trainer(parse_options(REFERENCE_RECIPE, sets + ["gpu_ids=[0]", "fp16=true"]))
    assert trainer.amp_dtype == (torch.bfloat16 if half == "bf16" else torch.float16)
    before = all_weights(trainer)
    trainer.fit()
    assert not trainer.nan_skips
    assert_each_network_learned(trainer, before)
    if trainer.scaler is not None:
        assert 0 < trainer.scaler.get_scale() < float("inf")
