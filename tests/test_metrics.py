import math

import numpy as np
import pytest
import skimage.data
import torch
from skimage.metrics import structural_similarity

from utils.image import rgb_to_y
from utils.metrics import psnr_y, ssim_y


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


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_ssim_agrees_with_skimage(name):
    hq = getattr(skimage.data, name)()[:160, :200]
    noise = np.random.default_rng(1).normal(0, 12, hq.shape)
    sr = np.clip(np.round(hq + noise), 0, 255).astype(np.uint8)
    reference = structural_similarity(rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hq)[4:-4, 4:-4], gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False, data_range=255)
    ours = ssim_y(sr, hq, crop_border=4)
    assert 0.3 < ours < 0.95
    assert ours == pytest.approx(reference, abs=1e-3)
