"""The latent-space playground: every mode on a tiny random SRFlow, and what each result must show."""
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from inference.corrupt import corrupt
from inference.latents import center_crop, normalize_for_restore, slerp
from test_inference import save_random_weights, tiny_srflow_recipe
from utils.image import read_image
from utils.metrics import psnr_y

SCRIPT = ROOT / "scripts" / "srflow_latent_space_playground.py"


@pytest.fixture(scope="module")
def play(image_dirs, tmp_path_factory):
    """play(mode, *extra args, output=DIR) runs the script in-process on the validation images, as HQ."""
    root = tmp_path_factory.mktemp("playground")
    recipe = tiny_srflow_recipe(image_dirs["val"], root)
    recipe["path"]["pretrain_model_generator"] = save_random_weights(recipe, root / "weights.pth")
    (root / "recipe.yml").write_text(yaml.safe_dump(recipe))
    main = runpy.run_path(str(SCRIPT))["main"]

    def run(mode: str, *extra: str, output: Path, input: str = f"{image_dirs['val']}/*.png") -> int:
        return main(["-opt", str(root / "recipe.yml"), "--mode", mode, "--input", input, "--output", str(output),
                     "--input-is", "hq", "--device", "cpu", *extra])
    return run


def names(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_temperature_writes_samples_and_t0_is_deterministic(play, tmp_path):
    assert play("temperature", "--temperature", "0.7", "--samples", "2", output=tmp_path / "a") == 0
    assert names(tmp_path / "a") == [f"{i}_temperature_t0.7_{k}.png" for i in (0, 1) for k in (0, 1)]
    for run in ("b", "c"):
        assert play("temperature", "--temperature", "0", output=tmp_path / run) == 0
    assert names(tmp_path / "b") == ["0_temperature_t0_0.png", "1_temperature_t0_0.png"]
    assert np.array_equal(read_image(tmp_path / "b" / "1_temperature_t0_0.png"),
                          read_image(tmp_path / "c" / "1_temperature_t0_0.png"))
    assert read_image(tmp_path / "b" / "1_temperature_t0_0.png").shape == (96, 96, 3)  # HQ input: same size


def test_lr_input_gives_results_scale_times_larger(play, image_dirs, tmp_path):
    assert play("temperature", "--temperature", "0", "--input-is", "lr", output=tmp_path,
                input=f"{image_dirs['val']}/0.png") == 0
    assert read_image(tmp_path / "0_temperature_t0_0.png").shape == (384, 320, 3)


def test_restore_at_t0_matches_plain_sr_and_corruptions_apply(play, image_dirs, tmp_path):
    assert play("restore", "--temperature", "0", output=tmp_path / "clean") == 0
    assert names(tmp_path / "clean") == ["0_restore_sr_t0.png", "0_restore_t0.png", "1_restore_sr_t0.png",
                                         "1_restore_t0.png"]
    for i in (0, 1):
        restored = read_image(tmp_path / "clean" / f"{i}_restore_t0.png")
        assert psnr_y(restored, read_image(tmp_path / "clean" / f"{i}_restore_sr_t0.png")) > 45
    assert play("restore", "--temperature", "0.8", "--jpeg", "20", "--blur", "1", "--noise", "0.02",
                output=tmp_path / "bad") == 0
    assert names(tmp_path / "bad") == ["0_restore_input.png", "0_restore_sr_t0.png", "0_restore_t0.8.png",
                                       "1_restore_input.png", "1_restore_sr_t0.png", "1_restore_t0.8.png"]
    corrupted = read_image(tmp_path / "bad" / "0_restore_input.png")
    assert 20 < psnr_y(corrupted, read_image(Path(image_dirs["val"]) / "0.png")) < 40


def test_latent_transfer_of_the_images_own_latents_reproduces_it(play, image_dirs, tmp_path):
    image = f"{image_dirs['val']}/1.png"
    assert play("latent_transfer", "--temperature", "1", "--reference", image, "--steps", "3", output=tmp_path,
                input=image) == 0
    assert names(tmp_path) == ["1_latent_transfer_1.png", "1_latent_transfer_1_lerp.png",
                               "1_latent_transfer_1_slerp.png"]
    original = read_image(image)
    assert psnr_y(read_image(tmp_path / "1_latent_transfer_1.png"), original) > 45
    strip = read_image(tmp_path / "1_latent_transfer_1_slerp.png")
    assert strip.shape == (96, 3 * 96, 3)
    assert psnr_y(strip[:, 2 * 96:], original) > 45


def test_encode_then_every_mode_takes_the_latents_file(play, image_dirs, tmp_path, capsys):
    assert play("encode", output=tmp_path / "enc", input=f"{image_dirs['val']}/0.png") == 0
    latents_file = tmp_path / "enc" / "0_encode.pt"
    saved = torch.load(latents_file, weights_only=True)
    assert saved["size"] == [96, 80] and len(saved["latents"]) == 2
    for mode in ("feed_through", "diversity", "restore"):
        assert play(mode, "--samples", "2", output=tmp_path / mode, input=str(latents_file)) == 0
    assert names(tmp_path / "feed_through") == ["0_feed_through_t0.8.png"]
    assert names(tmp_path / "diversity") == ["0_diversity_t0.8.png"]
    assert read_image(tmp_path / "diversity" / "0_diversity_t0.8.png").shape == (96, 80, 3)
    assert play("latent_transfer", "--reference", str(latents_file), "--steps", "2", output=tmp_path / "lt",
                input=f"{image_dirs['val']}/1.png") == 0
    assert "skipping reference 0: its latents are 48x40, smaller than the image's 48x48" in capsys.readouterr().out
    assert not (tmp_path / "lt").exists()


def test_out_of_distribution_latents_fall_back_to_lower_temperatures(play, image_dirs, tmp_path, capsys):
    assert play("encode", output=tmp_path, input=f"{image_dirs['val']}/1.png") == 0
    saved = torch.load(tmp_path / "1_encode.pt", weights_only=True)
    saved["name"], saved["latents"] = "wild", [z * 1e38 for z in saved["latents"]]
    torch.save(saved, tmp_path / "wild.pt")
    assert play("latent_transfer", "--temperature", "1", "--reference", str(tmp_path / "wild.pt"), "--steps", "2",
                output=tmp_path / "out", input=f"{image_dirs['val']}/1.png") == 0
    out = capsys.readouterr().out
    assert "diverged pixel values at t=1 (non-finite or beyond +-100); retrying at t=0.75" in out and "instead of t=1" in out
    assert np.isfinite(read_image(tmp_path / "out" / "1_latent_transfer_wild.png")).all()


def test_mistakes_exit_with_status_2(play, tmp_path, capsys):
    assert play("temperature", output=tmp_path, input=str(tmp_path / "none*.png")) == 2
    assert play("latent_transfer", output=tmp_path) == 2
    assert "matches no file" in capsys.readouterr().err


def test_latent_operations():
    z = [torch.randn(1, 6, 8, 8) * 3 + 2, torch.randn(1, 12, 4, 4)]
    for n in normalize_for_restore(z):
        assert torch.allclose(n.mean(1), torch.zeros(1), atol=1e-5)
        assert torch.allclose(n.std(1, correction=0), torch.ones(1), atol=1e-4)
    a, b = [torch.randn(1, 3, 4, 4)], [torch.randn(1, 3, 4, 4)]
    assert torch.allclose(slerp(a, b, 0.0)[0], a[0], atol=1e-5) and torch.allclose(slerp(a, b, 1.0)[0], b[0], atol=1e-5)
    assert torch.allclose(slerp(a, a, 0.3)[0], a[0], atol=1e-5)
    ref = torch.arange(36.0).view(1, 1, 6, 6)
    assert center_crop(ref, (1, 1, 2, 4)).tolist() == [[[[13.0, 14.0, 15.0, 16.0], [19.0, 20.0, 21.0, 22.0]]]]
    with pytest.raises(ValueError, match="smaller"):
        center_crop(ref, (1, 1, 8, 2))


def test_corruptions_change_the_image_and_keep_its_range():
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    for kwargs in ({"jpeg": 10}, {"blur": 1.5}, {"noise": 0.1}):
        out = corrupt(img, **kwargs)
        assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        assert np.abs(out - img).mean() > 0.01
    assert np.array_equal(corrupt(img), img)
