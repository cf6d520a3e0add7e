"""imresize against MATLAB's algorithm. The expected numbers were computed with a literal per-pixel
transcription of MATLAB's imresize definition (cubic a=-0.5, kernel stretched by 1/scale when shrinking,
symmetric padding) and agree to 1e-15 with the official SRFlow repo's code/imresize.py."""
import numpy as np
import pytest
import torch

from data.imresize import imresize

RAMP = np.arange(64, dtype=np.float64).reshape(8, 8) / 63
WAVE = np.sin(np.arange(35, dtype=np.float64).reshape(7, 5) * 0.7) * 0.5 + 0.5  # odd sizes

EXPECTED = {
    ("ramp", 1 / 2): [[0.064174107143, 0.096540178571, 0.128658234127, 0.161024305556],
                      [0.323102678571, 0.355468750000, 0.387586805556, 0.419952876984],
                      [0.580047123016, 0.612413194444, 0.644531250000, 0.676897321429],
                      [0.838975694444, 0.871341765873, 0.903459821429, 0.935825892857]],
    ("ramp", 1 / 4): [[0.196568080357, 0.263997395833],
                      [0.736002604167, 0.803431919643]],
    ("wave", 1 / 2): [[0.518688864035, 0.622850596779, 0.579133348332],
                      [0.497270636398, 0.491919426460, 0.496174607022],
                      [0.490532339155, 0.520726435093, 0.524958193997],
                      [0.636101671692, 0.271883399600, 0.195969635824]],
    ("wave", 1 / 3): [[0.536928335002, 0.572231466003],
                      [0.497939453573, 0.476402330647],
                      [0.519784998036, 0.330961161967]],
}


@pytest.mark.parametrize("name,scale", list(EXPECTED))
def test_downscale_matches_matlab(name, scale):
    img = RAMP if name == "ramp" else WAVE
    np.testing.assert_allclose(imresize(img, scale=scale), EXPECTED[name, scale], atol=1e-11)


def test_output_size_and_upscale():
    expected = [[0.487367319800, 0.583288472085, 0.619181861792, 0.569859871874],
                [0.494970292349, 0.495151819485, 0.498782853757, 0.503315374443],
                [0.579495428342, 0.481161133186, 0.396998351529, 0.386066980785]]
    np.testing.assert_allclose(imresize(WAVE, size=(3, 4)), expected, atol=1e-11)
    up = imresize(RAMP, scale=2)  # no antialiasing when enlarging: overshoots at the corners
    assert up.shape == (16, 16)
    np.testing.assert_allclose(up[0, :3], [-0.013392857143, -0.009052579365, -0.000372023810], atol=1e-11)
    np.testing.assert_allclose(up[-1, -1], 1.013392857143, atol=1e-11)


def test_constant_image_stays_constant():
    np.testing.assert_allclose(imresize(np.full((9, 11, 3), 0.3), scale=1 / 3), 0.3, atol=1e-12)


def test_layouts_and_dtypes_agree():
    rng = np.random.default_rng(0)
    hwc = rng.random((13, 17, 3)).astype(np.float32)
    out = imresize(hwc, scale=1 / 4)
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], imresize(hwc[..., 1], scale=1 / 4), atol=1e-6)
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    batch = torch.stack([chw, chw.flip(-1)])
    t = imresize(batch, scale=1 / 4)
    assert t.shape == (2, 3, 4, 5) and t.dtype == torch.float32
    np.testing.assert_allclose(t[0].permute(1, 2, 0).numpy(), out, atol=1e-6)
    np.testing.assert_allclose(imresize(chw, scale=1 / 4).numpy(), t[0].numpy(), atol=1e-6)


def test_rejects_bad_arguments():
    with pytest.raises(TypeError):
        imresize(np.zeros((8, 8, 3), np.int32), scale=0.5)
    with pytest.raises(ValueError):
        imresize(RAMP, scale=0.5, size=(4, 4))
