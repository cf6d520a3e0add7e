import math

import numpy as np
import pytest
import skimage.data
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import matlab_shrink_uint8
from data.lr_consistency import lr_psnr
from utils.image import rgb_to_y
from utils.metrics import psnr_rgb, psnr_y, ssim_rgb, ssim_rgb_fits, ssim_y, ssim_y_fits

PHOTOS = ["astronaut", "chelsea", "coffee"]


def _grey(value, h=16, w=16):
    return np.full((h, w, 3), value, np.uint8)


def test_rgb_to_y_matches_matlab_rgb2ycbcr():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(pixels)[0], [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(pixels / 255.0), rgb_to_y(pixels), atol=1e-9)


def test_psnr_of_a_known_mse():
    # Grey levels 100 and 110 differ in Y by 219 * 10 / 255 everywhere.
    expected = 10 * math.log10(255 ** 2 / (219 * 10 / 255) ** 2)
    assert psnr_y(_grey(110), _grey(100)) == pytest.approx(expected, abs=1e-9)
    # Half the pixels differ: the MSE halves, so PSNR rises by 10*log10(2).
    half = _grey(100)
    half[:8] = 110
    assert psnr_y(half, _grey(100)) == pytest.approx(expected + 10 * math.log10(2), abs=1e-9)
    assert psnr_y(_grey(100), _grey(100)) == math.inf


def test_crop_border_and_tensor_input():
    hq = _grey(100)
    sr = hq.copy()
    sr[:2] = 0  # damage only the top border
    assert psnr_y(sr, hq, crop_border=2) == math.inf and psnr_y(sr, hq) < 20
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1).float() / 255
    assert psnr_y(t(a)[None], t(b)) == pytest.approx(psnr_y(a, b), abs=1e-9)
    assert ssim_y(t(a), t(b)) == pytest.approx(ssim_y(a, b), abs=1e-9)
    with pytest.raises(ValueError):
        psnr_y(a, b[:20])


def test_ssim_of_identical_images_is_one():
    img = skimage.data.astronaut()[:96, :96]
    assert ssim_y(img, img) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", PHOTOS)
def test_ssim_agrees_with_skimage(name):
    hq = getattr(skimage.data, name)()[:160, :200]
    noise = np.random.default_rng(1).normal(0, 12, hq.shape)
    sr = np.clip(np.round(hq + noise), 0, 255).astype(np.uint8)
    reference = structural_similarity(rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hq)[4:-4, 4:-4], gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False, data_range=255)
    ours = ssim_y(sr, hq, crop_border=4)
    assert 0.3 < ours < 0.95
    assert ours == pytest.approx(reference, abs=1e-3)


def _noisy_photo(name, h=160, w=200, std=12.0, seed=1):
    hq = getattr(skimage.data, name)()[:h, :w]
    sr = np.clip(np.round(hq + np.random.default_rng(seed).normal(0, std, hq.shape)), 0, 255).astype(np.uint8)
    return sr, hq


@pytest.mark.parametrize("name", PHOTOS)
def test_rgb_metrics_are_the_official_srflow_measure(name):
    """SRFlow's Measure: psnr(a, b) and ssim(a, b, multichannel=True) of skimage on uint8 RGB, no crop."""
    sr, hq = _noisy_photo(name)
    assert psnr_rgb(sr, hq) == pytest.approx(peak_signal_noise_ratio(hq, sr), abs=1e-9)
    reference = structural_similarity(sr, hq, channel_axis=-1)  # skimage's defaults, data range 255 from uint8
    assert 0.3 < ssim_rgb(sr, hq) < 0.95
    assert ssim_rgb(sr, hq) == pytest.approx(reference, abs=1e-9)
    as_tensor = torch.from_numpy(sr).permute(2, 0, 1).float() / 255
    assert psnr_rgb(as_tensor, hq) == pytest.approx(psnr_rgb(sr, hq), abs=1e-9)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("scale", [4, 8])
def test_lr_psnr_is_the_challenge_measure(name, scale):
    sr, hq = _noisy_photo(name, std=20)
    expected = peak_signal_noise_ratio(matlab_shrink_uint8(hq, scale), matlab_shrink_uint8(sr, scale))
    assert lr_psnr(sr, hq, scale) == pytest.approx(expected, abs=1e-9)
    assert lr_psnr(sr, hq, scale) > psnr_rgb(sr, hq) + 5  # downscaling averages the noise away
    assert lr_psnr(hq, hq, scale) == math.inf


def test_ssim_on_images_smaller_than_its_window_is_refused_not_nan():
    rng = np.random.default_rng(2)
    for side, why in ((16, "smaller than the 11x11 SSIM window"), (8, "crop_border 4 leaves nothing")):
        a, b = rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8)
        assert not ssim_y_fits(side, side, crop_border=4)
        with pytest.raises(ValueError, match=why):
            ssim_y(a, b, crop_border=4)
    with pytest.raises(ValueError, match="crop_border 4 leaves nothing"):
        psnr_y(a, b, crop_border=4)
    assert ssim_y_fits(19, 30, crop_border=4) and not ssim_y_fits(18, 30, crop_border=4)
    a, b = rng.integers(0, 256, (2, 7, 9, 3), dtype=np.uint8)
    assert ssim_rgb_fits(7, 9) and not ssim_rgb_fits(6, 9)
    assert ssim_rgb(a, b) == pytest.approx(structural_similarity(a, b, channel_axis=-1), abs=1e-9)
    with pytest.raises(ValueError, match="7x7 SSIM window"):
        ssim_rgb(a[:6], b[:6])
