"""The latent-space playground: every mode on a tiny random SRFlow, and what each result must show."""
import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, save_random_weights, tiny_test_srflow_recipe
from inference.corrupt import corrupt
from inference.images import resample
from inference.latents import center_crop, normalize_for_restore, slerp, strip_fractions
from utils import precision
from utils.image import read_image
from utils.metrics import psnr_y

SCRIPT = ROOT / "scripts" / "srflow_latent_space_playground.py"


@pytest.fixture(scope="module")
def play(image_dirs, tmp_path_factory):
    """play(mode, *extra args, output=DIR) runs the script in-process on the validation images, as HQ."""
    root = tmp_path_factory.mktemp("playground")
    recipe = tiny_test_srflow_recipe(image_dirs["val"], root)
    recipe["path"]["pretrain_model_generator"] = save_random_weights(recipe, root / "weights.pth")
    (root / "recipe.yml").write_text(yaml.safe_dump(recipe))
    main = runpy.run_path(str(SCRIPT))["main"]

    def run(mode: str, *extra: str, output: Path, input: str = f"{image_dirs['val']}/*.png") -> int:
        return main(["-opt", str(root / "recipe.yml"), "--mode", mode, "--input", input, "--output", str(output),
                     "--input-is", "hq", "--device", "cpu", *extra])
    return run


def names(folder: Path, strips: bool = False) -> list:
    """The results in `folder` (not the folder's lock and record); without the interpolation strips' frames
    unless `strips`."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (strips or "_strip" not in p.name))


def frames(prefix: str, steps: int) -> list:
    return [f"{prefix}_strip{k}.png" for k in range(steps)]


def test_temperature_scales_the_inputs_own_latents_and_t1_gives_it_back(play, image_dirs, tmp_path):
    assert play("temperature", "--temperature", "1", "--steps", "2", output=tmp_path) == 0
    assert names(tmp_path) == ["0_temperature_t1.png", "1_temperature_t1.png"]
    for i in (0, 1):
        original = read_image(Path(image_dirs["val"]) / f"{i}.png")
        again = read_image(tmp_path / f"{i}_temperature_t1.png")
        assert again.shape == original.shape
        assert np.abs(again - original).max() <= 1 / 255 + 1e-6  # decode inverts encode; only the PNG rounds


@pytest.mark.skipif(precision.cpu_bf16_feature() is None, reason="this CPU has no native bf16")
def test_bf16_temperature_1_still_gives_the_input_back(play, image_dirs, tmp_path, capsys):
    assert play("temperature", "--temperature", "1", "--steps", "2", "--precision", "bf16", output=tmp_path) == 0
    assert "on cpu in bf16" in capsys.readouterr().out
    for i in (0, 1):
        original = read_image(Path(image_dirs["val"]) / f"{i}.png")
        again = read_image(tmp_path / f"{i}_temperature_t1.png")
        assert np.abs(again - original).max() <= 1 / 255 + 1e-6  # what reads the latents stays float32


def test_strip_goes_from_the_modes_latents_to_the_t0_mean_image(play, tmp_path):
    assert play("temperature", "--temperature", "1", "--steps", "3", output=tmp_path / "strip") == 0
    assert names(tmp_path / "strip", strips=True) == sorted(
        [f"{i}_temperature_t1.png" for i in (0, 1)] + frames("0_temperature", 3) + frames("1_temperature", 3))
    for t in ("0", "0.5"):
        assert play("temperature", "--temperature", t, "--steps", "2", output=tmp_path / f"t{t}") == 0
    strip = [read_image(tmp_path / "strip" / name) for name in frames("1_temperature", 3)]
    assert np.array_equal(strip[0], read_image(tmp_path / "strip" / "1_temperature_t1.png"))
    assert np.array_equal(strip[1], read_image(tmp_path / "t0.5" / "1_temperature_t0.5.png"))  # evenly spaced
    assert np.array_equal(strip[2], read_image(tmp_path / "t0" / "1_temperature_t0.png"))  # zeros: the mean image
    assert not np.array_equal(strip[0], strip[2])
    at_zero = [read_image(tmp_path / "t0" / name) for name in frames("1_temperature", 2)]
    assert np.array_equal(at_zero[0], at_zero[1])  # at t=0 the latents are zeros from the start


def test_strip_fractions_are_dlas_evenly_spaced_with_both_ends():
    assert strip_fractions(10) == pytest.approx([1 - k / 9 for k in range(10)])
    assert strip_fractions(2) == [1.0, 0.0] and strip_fractions(7)[-1] == 0.0


def test_sample_mode_draws_fresh_samples_and_t0_is_the_mean(play, tmp_path):
    assert play("sample", "--temperature", "0.7", "--samples", "2", "--steps", "2", output=tmp_path / "a") == 0
    assert names(tmp_path / "a") == [f"{i}_sample_t0.7_{k}.png" for i in (0, 1) for k in (0, 1)]
    a, b = (read_image(tmp_path / "a" / f"1_sample_t0.7_{k}.png") for k in (0, 1))
    assert a.shape == (96, 96, 3) and not np.array_equal(a, b)  # HQ input: same size; two draws
    assert np.array_equal(a, read_image(tmp_path / "a" / "1_sample_strip0.png"))  # the strip starts at sample 0
    for run in ("b", "c"):
        assert play("sample", "--temperature", "0", "--steps", "2", output=tmp_path / run) == 0
    assert names(tmp_path / "b") == ["0_sample_t0_0.png", "1_sample_t0_0.png"]
    mean = read_image(tmp_path / "b" / "1_sample_t0_0.png")
    assert np.array_equal(mean, read_image(tmp_path / "c" / "1_sample_t0_0.png"))
    assert np.array_equal(mean, read_image(tmp_path / "a" / "1_sample_strip1.png"))  # and ends at the mean


def test_lr_input_gives_results_scale_times_larger(play, image_dirs, tmp_path):
    assert play("temperature", "--temperature", "0", "--input-is", "lr", "--steps", "2", output=tmp_path,
                input=f"{image_dirs['val']}/0.png") == 0
    assert read_image(tmp_path / "0_temperature_t0.png").shape == (384, 320, 3)


def test_resample_factor_scales_the_input_before_it_is_encoded(play, image_dirs, tmp_path):
    image = f"{image_dirs['val']}/0.png"
    assert play("temperature", "--temperature", "1", "--resample-factor", "2", "--steps", "2",
                output=tmp_path / "up", input=image) == 0
    up = read_image(tmp_path / "up" / "0_temperature_t1.png")
    assert up.shape == (192, 160, 3)
    assert np.abs(up - resample(read_image(image), 2)).max() <= 1 / 255 + 1e-6  # t=1: the resampled input back
    assert play("temperature", "--temperature", "0", "--resample-factor", "0.5", "--steps", "2",
                output=tmp_path / "down", input=image) == 0
    assert read_image(tmp_path / "down" / "0_temperature_t0.png").shape == (48, 40, 3)


def test_restore_at_t0_matches_plain_sr_and_corruptions_apply(play, image_dirs, tmp_path):
    assert play("restore", "--temperature", "0", "--steps", "2", output=tmp_path / "clean") == 0
    assert names(tmp_path / "clean") == ["0_restore_sr_t0.png", "0_restore_t0.png", "1_restore_sr_t0.png",
                                         "1_restore_t0.png"]
    for i in (0, 1):
        restored = read_image(tmp_path / "clean" / f"{i}_restore_t0.png")
        assert psnr_y(restored, read_image(tmp_path / "clean" / f"{i}_restore_sr_t0.png")) > 45
    assert play("restore", "--temperature", "0.8", "--jpeg", "20", "--blur", "1", "--noise", "0.02", "--steps", "2",
                output=tmp_path / "bad") == 0
    assert names(tmp_path / "bad") == ["0_restore_input.png", "0_restore_sr_t0.png", "0_restore_t0.8.png",
                                       "1_restore_input.png", "1_restore_sr_t0.png", "1_restore_t0.8.png"]
    assert names(tmp_path / "bad", strips=True).count("0_restore_strip1.png") == 1
    corrupted = read_image(tmp_path / "bad" / "0_restore_input.png")
    assert 20 < psnr_y(corrupted, read_image(Path(image_dirs["val"]) / "0.png")) < 40


def test_restore_normalises_with_the_unbiased_std_as_dlas():
    z = torch.randn(1, 6, 8, 8) * 3 + 2
    spatial = (z - z.mean((2, 3), keepdim=True)) / z.std((2, 3), keepdim=True)  # DLAS's spatial_norm
    local = (spatial - spatial.mean(1, keepdim=True)) / spatial.std(1, keepdim=True)  # then its local_norm
    assert torch.allclose(normalize_for_restore([z])[0], local, atol=1e-6)
    assert torch.allclose(normalize_for_restore([z], "spatial")[0], spatial, atol=1e-6)
    n = normalize_for_restore([z])[0]
    assert torch.allclose(n.std(1), torch.ones(1), atol=1e-5)  # torch.std's default: unbiased
    assert not torch.allclose(n.std(1, correction=0), torch.ones(1), atol=1e-2)
    flat = torch.cat([x.flatten() for x in normalize_for_restore([z, torch.randn(1, 12, 4, 4) * 5], "global")])
    assert abs(float(flat.mean())) < 1e-5 and abs(float(flat.std()) - 1) < 1e-5  # one mean and std for all
    assert torch.equal(normalize_for_restore([torch.full((1, 2, 3, 3), 4.0)])[0], torch.zeros(1, 2, 3, 3))


def test_latent_transfer_of_the_images_own_latents_reproduces_it(play, image_dirs, tmp_path):
    image = f"{image_dirs['val']}/1.png"
    assert play("latent_transfer", "--temperature", "1", "--reference", image, "--steps", "3",
                "--reference-corruptions", "none", output=tmp_path, input=image) == 0
    assert names(tmp_path) == ["1_latent_transfer_1.png", "1_latent_transfer_1_lerp.png",
                               "1_latent_transfer_1_slerp.png"]
    assert names(tmp_path, strips=True)[-3:] == frames("1_latent_transfer_1", 3)
    original = read_image(image)
    assert psnr_y(read_image(tmp_path / "1_latent_transfer_1.png"), original) > 45
    strip = read_image(tmp_path / "1_latent_transfer_1_slerp.png")
    assert strip.shape == (96, 3 * 96, 3)
    assert psnr_y(strip[:, 2 * 96:], original) > 45


def test_latent_transfer_corrupts_the_references_lr_as_dlas_by_default(play, image_dirs, tmp_path):
    image = f"{image_dirs['val']}/1.png"
    runs = {"default": (), "dlas": ("--reference-corruptions", "jpeg-medium,gaussian_blur_3"),
            "none": ("--reference-corruptions", "none")}
    results = {}
    for run, extra in runs.items():
        assert play("latent_transfer", "--temperature", "1", "--reference", image, "--steps", "2", *extra,
                    output=tmp_path / run, input=image) == 0
        results[run] = read_image(tmp_path / run / "1_latent_transfer_1.png")
    assert np.array_equal(results["default"], results["dlas"])
    original = read_image(image)
    assert psnr_y(results["none"], original) > 45 > psnr_y(results["default"], original)


def test_encode_then_every_mode_takes_the_latents_file(play, image_dirs, tmp_path, capsys):
    assert play("encode", "--steps", "2", output=tmp_path / "enc", input=f"{image_dirs['val']}/0.png") == 0
    assert names(tmp_path / "enc", strips=True) == ["0_encode.pt"] + frames("0_encode", 2)
    latents_file = tmp_path / "enc" / "0_encode.pt"
    saved = torch.load(latents_file, weights_only=True)
    assert saved["size"] == [96, 80] and len(saved["latents"]) == 2
    for mode in ("feed_through", "diversity", "restore"):
        assert play(mode, "--samples", "2", "--steps", "2", output=tmp_path / mode, input=str(latents_file)) == 0
    assert names(tmp_path / "feed_through") == ["0_feed_through_t0.8.png"]
    assert names(tmp_path / "diversity") == ["0_diversity_t0.8.png"]
    assert names(tmp_path / "diversity", strips=True)[:2] == frames("0_diversity", 2)
    assert read_image(tmp_path / "diversity" / "0_diversity_t0.8.png").shape == (96, 80, 3)
    assert play("latent_transfer", "--reference", str(latents_file), "--steps", "2", output=tmp_path / "lt",
                input=f"{image_dirs['val']}/1.png") == 0
    assert "skipping reference 0: its latents are 48x40, smaller than the image's 48x48" in capsys.readouterr().out
    assert names(tmp_path / "lt", strips=True) == []  # no result


def test_out_of_distribution_latents_fall_back_to_lower_temperatures(play, image_dirs, tmp_path, capsys):
    assert play("encode", "--steps", "2", output=tmp_path, input=f"{image_dirs['val']}/1.png") == 0
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


@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "-0.5", "`--temperature` must be a finite number >= 0"),
    ("--temperature", "nan", "`--temperature` must be a finite number >= 0"),
    ("--temperature", "warm", "`--temperature` must be a finite number >= 0"),
    ("--resample-factor", "0", "--resample-factor must be a number > 0 and <= 16, got 0"),
    ("--resample-factor", "1000", "--resample-factor must be a number > 0 and <= 16, got 1000"),
    ("--steps", "1", "--steps must be 2 to 100"),
    ("--steps", "1000000", "--steps must be 2 to 100 (frames per interpolation strip), got 1000000"),
    ("--samples", "0", "--samples must be 1 to 100, got 0"),
    ("--samples", "1000000", "--samples must be 1 to 100, got 1000000"),
    ("--reference-corruptions", "jpeg-medium,blurry", "unknown corruption `blurry`"),
])
def test_bad_values_exit_2_with_one_line_before_the_model_loads(play, tmp_path, capsys, flag, value, message):
    assert play("temperature", flag, value, output=tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_failed_write_keeps_the_earlier_results_whole(play, image_dirs, tmp_path, monkeypatch, capsys):
    image = f"{image_dirs['val']}/0.png"
    assert play("temperature", "--temperature", "0.5", "--steps", "2", output=tmp_path, input=image) == 0
    assert play("encode", "--steps", "2", output=tmp_path / "enc", input=image) == 0

    def contents() -> dict:
        return {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
                if p.is_file() and p.suffix in (".png", ".pt")}
    before = contents()

    def full_disk(path, *args, **kwargs):  # a torn file where the image was to go, as on a full disk
        Path(path).write_bytes(b"\x89PNG\r\n")
        return False

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(cv2, "imwrite", full_disk)
        assert play("temperature", "--temperature", "0.5", "--steps", "2", "--overwrite", output=tmp_path,
                    input=image) == 2
    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", no_space)
        assert play("encode", "--steps", "2", "--overwrite", output=tmp_path / "enc", input=image) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: cannot write the results of") for line in err)
    assert "No space left on device" in err[1]
    temporary = [p for p in tmp_path.rglob(".*") if p.name not in (".lock", ".lock.holder", ".written.json")]
    assert contents() == before and not temporary  # unchanged, and no temporary files


def test_latent_operations():
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
