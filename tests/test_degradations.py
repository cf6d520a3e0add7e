import numpy as np
import pytest
import torch

from conftest import ROOT, smooth_image
from data import build_dataset
from data.degradations import CORRUPTIONS, Corruptor, apply_named, corrupt, gaussian_blur, jpeg
from data.imresize import imresize
from utils.errors import ConfigError
from utils.image import write_image
from utils.metrics import psnr_y as psnr
from utils.options import parse_options


@pytest.fixture(scope="module")
def img():
    return smooth_image(np.random.default_rng(1), 48, 40).astype(np.float32) / 255


def _high_freq_energy(img):
    return float(np.mean(np.diff(img, axis=0) ** 2) + np.mean(np.diff(img, axis=1) ** 2))


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_corruption_is_seeded_keeps_dtype_range_and_changes_the_image(img, name):
    for dtype in (np.float32, np.float64):
        x = img.astype(dtype)
        out = apply_named(x, name, np.random.default_rng(5))
        assert out.dtype == dtype and out.shape == x.shape and 0 <= out.min() and out.max() <= 1
        np.testing.assert_array_equal(out, apply_named(x, name, np.random.default_rng(5)))
    strongest = apply_named(img, name, 3, strength=1)
    assert np.array_equal(strongest, img) == (name == "none")


def test_jpeg_quality_orders_the_damage(img):
    assert psnr(jpeg(img, 10), img) < psnr(jpeg(img, 50), img) < psnr(jpeg(img, 90), img)
    assert psnr(apply_named(img, "jpeg", strength=1), img) < psnr(apply_named(img, "jpeg-normal", strength=0), img)


@pytest.mark.parametrize("name", ["gaussian_blur", "gaussian_blur_3", "motion_blur"])
def test_blur_lowers_high_frequency_energy(img, name):
    mild, strong = (apply_named(img, name, 0, strength=s) for s in (0.5, 1))
    assert _high_freq_energy(strong) <= _high_freq_energy(mild) < _high_freq_energy(img)
    if name != "gaussian_blur_3":  # the fixed kernel ignores corruption_blur_scale
        wider = apply_named(img, name, 0, strength=1, blur_scale=2)
        assert _high_freq_energy(wider) < _high_freq_energy(strong)
    assert _high_freq_energy(gaussian_blur(img, 2)) < _high_freq_energy(gaussian_blur(img, 1))


@pytest.mark.parametrize("name", ["gaussian_noise", "poisson_noise", "noise"])
def test_noise_grows_with_strength(img, name):
    grey = np.full_like(img, 0.5)
    weak, strong = ((apply_named(grey, name, 0, strength=s) - grey).std() for s in (0.1, 1))
    assert 0 < weak < strong
    assert abs((apply_named(grey, "noise-5", 0) - grey).std() - 5 / 255) < 0.3 / 255


def test_color_jitter_moves_colours_and_zero_strength_does_not(img):
    np.testing.assert_allclose(apply_named(img, "color_jitter", 0, strength=0), img, atol=1e-6)
    moved = apply_named(img, "color_jitter", 0, strength=1)
    assert np.abs(moved.mean(axis=(0, 1)) - img.mean(axis=(0, 1))).max() > 1e-3


def test_corrupt_applies_names_in_order_from_one_generator(img):
    a = corrupt(img, ["gaussian_blur", "jpeg-medium"], np.random.default_rng(9))
    assert np.array_equal(a, corrupt(img, ["gaussian_blur", "jpeg-medium"], 9))  # a seed works like a Generator
    rng = np.random.default_rng(9)
    by_hand = apply_named(apply_named(img, "gaussian_blur", rng), "jpeg-medium", rng)
    assert np.array_equal(a, by_hand)
    assert np.array_equal(corrupt(img, [], 0), img)


def test_corruptor_picks_num_random_then_fixed(img):
    corruptor = Corruptor({"num_corrupts_per_image": 2, "random_corruptions": ["noise-5", "greyscale"],
                           "fixed_corruptions": ["jpeg"]})
    out = corruptor(img, np.random.default_rng(4))
    assert np.array_equal(out, corruptor(img, np.random.default_rng(4)))
    rng = np.random.default_rng(4)
    picks = [["noise-5", "greyscale"][i] for i in rng.integers(2, size=2)]
    assert np.array_equal(out, corrupt(img, picks + ["jpeg"], rng))
    assert "none" not in Corruptor({"num_corrupts_per_image": 1}).pool and len(Corruptor({}).pool) > 10


@pytest.mark.parametrize("opt, message", [
    ({"fixed_corruptions": ["gausian_blur"]}, r"unknown corruption `gausian_blur` at `fixed_corruptions` "
                                              r"\(did you mean `gaussian_blur`\?\); known: .*jpeg-medium"),
    ({"random_corruptions": ["blur"]}, "unknown corruption `blur` at `random_corruptions`"),
    ({"fixed_corruptions": "jpeg"}, "`fixed_corruptions` must be a list"),
    ({"num_corrupts_per_image": -1}, "`num_corrupts_per_image` must be a non-negative integer"),
    ({"corruption_blur_scale": -2}, "`corruption_blur_scale` must be a non-negative number"),
])
def test_corruption_option_errors(opt, message):
    with pytest.raises(ConfigError, match=message):
        Corruptor(opt)


def test_datasets_corrupt_the_lq_reproducibly(image_dirs):
    opt = {"mode": "single_image_extensible", "paths": image_dirs["train"], "target_size": 32, "scale": 4,
           "fixed_corruptions": ["gaussian_blur", "jpeg-medium"]}
    train = build_dataset(opt, {}, "train")
    a, b, c = train[(0, 7)], train[(0, 7)], train[(0, 8)]
    assert torch.equal(a["lq"], b["lq"]) and not torch.equal(a["lq"], c["lq"])
    bicubic = imresize(a["hq"], scale=1 / 4).clamp(0, 1)
    assert a["lq"].shape == bicubic.shape and (a["lq"] - bicubic).abs().max() > 0.01
    val = build_dataset({**opt, "eval": True}, {}, "val")
    assert torch.equal(val[1]["lq"], val[1]["lq"])  # a plain index corrupts the same way every pass
    full = build_dataset({"mode": "fullimage", "dataroot_GT": image_dirs["val"], "scale": 4,
                          "num_corrupts_per_image": 1}, {}, "val")
    item = full[0]
    assert torch.equal(item["lq"], full[0]["lq"])
    assert not torch.equal(item["lq"], imresize(item["hq"], scale=1 / 4).clamp(0, 1))


def test_paired_training_crops_are_aligned(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        lq = rng.random((20, 24, 3)).astype(np.float32)
        write_image(tmp_path / "lq" / f"{name}x4.png", lq)
        write_image(tmp_path / "gt" / f"{name}.png", np.kron(lq, np.ones((4, 4, 1), np.float32)))  # 4x4 blocks
    opt = {"mode": "paired", "dataroot_GT": str(tmp_path / "gt"), "dataroot_LQ": str(tmp_path / "lq"), "scale": 4,
           "target_size": 32, "phase": "train"}
    ds = build_dataset(opt, {}, "train")
    seen = set()
    for seed in range(12):
        item = ds[(seed % 2, seed)]
        assert item["hq"].shape == (3, 32, 32) and item["lq"].shape == (3, 8, 8)
        # Each LQ pixel sits exactly under its 4x4 HQ block, whatever the crop, flips and rotation.
        assert torch.equal(item["hq"], item["lq"].repeat_interleave(4, 1).repeat_interleave(4, 2))
        seen.add(item["lq"][:, 0, 0].numpy().tobytes())
    assert len(seen) > 6  # crops and flips vary
    assert torch.equal(ds[(1, 3)]["hq"], ds[(1, 3)]["hq"])
    centre = build_dataset({**opt, "eval": True}, {}, "val")[0]
    assert torch.equal(centre["lq"], build_dataset({**opt, "eval": True}, {}, "val")[0]["lq"])
    with pytest.raises(ConfigError, match="`target_size` .* required to train in mode `paired`"):
        build_dataset({**opt, "target_size": None}, {}, "train")
    with pytest.raises(ConfigError, match="`target_size` 30 must be a multiple"):
        build_dataset({**opt, "target_size": 30}, {}, "train")


def test_corrupted_demo_recipe_builds():
    opt = parse_options(ROOT / "options/demo/rrdb_corrupted.yml")
    assert opt["name"] == "demo_rrdb_corrupted"
    train = build_dataset(opt["datasets"]["train"], opt, "train")
    assert train.corrupt.fixed == ["gaussian_blur", "jpeg-medium"]
    assert build_dataset(opt["datasets"]["val"], opt, "val").corrupt is not None
