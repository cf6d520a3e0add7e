"""test.py as a researcher's evaluation tool: samples per temperature, every metric recomputed independently
from the written PNGs, resume after an interruption, atomic writes, pictures, LPIPS with and without its
weights (faked: nothing here downloads), and validation during training on images too small for SSIM."""
import csv
import errno
import math
import sys
import types
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import inference.test_runner as test_runner
from conftest import matlab_shrink_uint8, run_test_py, save_random_weights, tiny_rrdb_recipe, tiny_test_srflow_recipe
from inference.model import parse_inference_options
from inference.pictures import PANEL_SIDES, nll_figure
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.files import atomic_write_text
from utils.image import rgb_to_y, write_image
from utils.options import parse_options

SAMPLES = 3
HEATS = [0.0, 0.5]
# crops of scikit-image's bundled photos; the last is too small for SSIM-Y (11 + 2 * 4) and LPIPS (31)
PHOTOS = {"astronaut": (slice(40, 88), slice(180, 244)), "chelsea": (slice(60, 124), slice(200, 256)),
          "coffee": (slice(100, 116), slice(300, 316))}
TABLES = ("metrics.csv", "diversity.csv", "summary.csv")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, crop in PHOTOS.items():
        cv2.imwrite(str(folder / f"{name}.png"), getattr(skimage.data, name)()[crop][:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def weights(photo_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return save_random_weights(tiny_test_srflow_recipe(str(photo_dir), root), root / "flow.pth")


def recipe_for(photo_dir, weights, results, tensorboard=False, **test):
    recipe = tiny_test_srflow_recipe(str(photo_dir), results.parent, weights)
    recipe["path"]["results_root"] = str(results)
    recipe["use_tb_logger"] = tensorboard
    recipe["test"] = {"heats": HEATS, "samples": SAMPLES, **test}
    return recipe


def run(recipe, **kwargs):
    messages = []
    summary = test_runner.run_test(parse_inference_options(recipe), report=messages.append, **kwargs)
    return summary["test"], "\n".join(messages)


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def png(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1]


@pytest.fixture(scope="module")
def finished(photo_dir, weights, tmp_path_factory):
    """One uninterrupted run: (results folder of the set, summary rows, messages)."""
    results = tmp_path_factory.mktemp("finished") / "results"
    summary, text = run(recipe_for(photo_dir, weights, results, tensorboard=True))
    return results / "set", summary, text


def test_every_temperature_above_zero_gives_its_samples_with_stem_first_names(finished):
    out, _, _ = finished
    expected = [f"{stem}_t0_s0.png" for stem in PHOTOS] + [f"{stem}_t0.5_s{k}.png" for stem in PHOTOS
                                                             for k in range(SAMPLES)]
    assert sorted(p.name for p in out.glob("*.png") if p.name != "temperature_sweep.png") == sorted(expected)
    rows = rows_of(out / "metrics.csv")
    assert sorted(r["file"] for r in rows) == sorted(expected)  # one row per written image
    for row in rows:
        assert row["file"] == f"{Path(row['image']).stem}_t{float(row['temperature']):g}_s{row['sample']}.png"
    assert [(r["temperature"], r["samples"]) for r in rows_of(out / "summary.csv")] == [("0.0", "1"), ("0.5", "3")]


def test_each_metric_equals_an_independent_computation_from_the_pngs(finished, photo_dir):
    out, _, text = finished
    rows = rows_of(out / "metrics.csv")
    for row in rows:
        sr, hq = png(out / row["file"]), png(photo_dir / row["image"])
        assert float(row["psnr_rgb"]) == pytest.approx(peak_signal_noise_ratio(hq, sr), abs=1e-9)
        lr = peak_signal_noise_ratio(matlab_shrink_uint8(hq, 4), matlab_shrink_uint8(sr, 4))
        assert float(row["lr_psnr"]) == pytest.approx(lr, abs=1e-9)
        y_sr, y_hq = rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hq)[4:-4, 4:-4]
        assert float(row["psnr_y"]) == pytest.approx(10 * math.log10(255 ** 2 / np.mean((y_sr - y_hq) ** 2)), abs=1e-9)
        if row["image"] == "coffee.png":  # 16x16: no SSIM, said once, instead of NaN or a crash
            assert row["ssim_y"] == "" and row["ssim_rgb"] != ""
            continue
        assert float(row["ssim_rgb"]) == pytest.approx(structural_similarity(sr, hq, channel_axis=-1), abs=1e-9)
        ssim = structural_similarity(y_sr, y_hq, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
        assert float(row["ssim_y"]) == pytest.approx(ssim, abs=2e-3)  # filters differ at the edge of the window
    assert "coffee.png is 16x16, too small for: ssim_y" in text


def test_summary_and_diversity_tables_follow_from_the_rows_and_pngs(finished, photo_dir):
    out, summary, text = finished
    rows, stats = rows_of(out / "metrics.csv"), rows_of(out / "diversity.csv")
    assert [(s["image"], s["temperature"], s["samples"]) for s in stats] == [(p + ".png", "0.5", "3") for p in PHOTOS]
    for stat in stats:
        samples = np.stack([png(out / f"{Path(stat['image']).stem}_t0.5_s{k}.png") for k in range(SAMPLES)])
        assert float(stat["sample_std"]) == pytest.approx(samples.astype(float).std(axis=0).mean(), abs=1e-9)
    hot = [r for r in rows if r["temperature"] == "0.5"]
    assert float(summary[1]["psnr_rgb"]) == pytest.approx(np.mean([float(r["psnr_rgb"]) for r in hot]), abs=1e-9)
    worst = [min(float(r["lr_psnr"]) for r in hot if r["image"] == p + ".png") for p in PHOTOS]
    assert float(summary[1]["lr_psnr_worst"]) == pytest.approx(np.mean(worst), abs=1e-9)
    assert float(summary[1]["sample_std"]) == pytest.approx(np.mean([float(s["sample_std"]) for s in stats]))
    assert summary == [{k: v for k, v in r.items() if v} for r in rows_of(out / "summary.csv")]
    assert "LR-PSNR worst" in text and "sample_std" in text


def test_pictures_are_written_and_readable(finished):
    out, _, _ = finished
    for stem, (rows, cols) in PHOTOS.items():
        strip = png(out / "comparisons" / f"{stem}.png")
        side = max(rows.stop - rows.start, cols.stop - cols.start)
        zoom = -(-PANEL_SIDES[0] // side)
        panels = 1 + 1 + SAMPLES + 1 + 1  # bicubic | t=0 | samples | std | HQ
        assert strip.shape[1] == panels * ((cols.stop - cols.start) * zoom + 4) + 4
        assert strip.std() > 10  # not blank
    sweep = png(out / "temperature_sweep.png")
    assert sweep.shape[0] > 200 and sweep.shape[1] > 600 and sweep.std() > 10
    assert list((out.parent / "tb_logger").glob("events.out.tfevents.*"))  # the sweep, as use_tb_logger is on


def test_an_interrupted_run_resumes_to_the_same_tables(finished, photo_dir, weights, tmp_path, monkeypatch):
    out, _, _ = finished
    recipe = recipe_for(photo_dir, weights, tmp_path / "results")
    real, calls, crash_at = test_runner.super_resolve, [], [1 + SAMPLES + 2]  # in the second image

    def crash_in_the_second_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_at[0]:
            crash_at[0] = None  # once
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(test_runner, "super_resolve", crash_in_the_second_image)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(recipe)
    resumed = tmp_path / "results" / "set"
    assert [r["image"] for r in rows_of(resumed / "metrics.csv")] == ["astronaut.png"] * (1 + SAMPLES)
    calls.clear()
    _, text = run(recipe)
    assert len(calls) == 2 * (1 + SAMPLES) and "1 image(s) already had their results" in text
    for name in TABLES:
        assert (resumed / name).read_bytes() == (out / name).read_bytes(), name
    for image in out.glob("*_s*.png"):
        assert np.array_equal(png(resumed / image.name), png(image)), image.name
    calls.clear()
    run(recipe, overwrite=True)
    assert len(calls) == 3 * (1 + SAMPLES)
    assert (resumed / "metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()


def test_other_settings_are_not_mixed_into_earlier_results(finished, photo_dir, weights, tmp_path, capsys):
    results = tmp_path / "results"
    run(recipe_for(photo_dir, weights, results))
    import yaml
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe_for(photo_dir, weights, results, samples=2)))
    assert run_test_py("-opt", str(path)) == 2
    err = capsys.readouterr().err
    assert "other settings (samples 3 -> 2)" in err and "--overwrite" in err
    assert run_test_py("-opt", str(path), "--overwrite") == 0
    assert {r["sample"] for r in rows_of(results / "set" / "metrics.csv")} == {"0", "1"}


def test_a_full_disk_keeps_every_earlier_result(photo_dir, weights, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    recipe = recipe_for(photo_dir, weights, results)
    run(recipe)
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and p.name != ".lock.holder"}
    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)  # what cv2 does when the disk is full
    import yaml
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    assert run_test_py("-opt", str(path), "--overwrite") == 2
    err = capsys.readouterr().err
    assert "could not write image" in err and "are kept" in err and "Traceback" not in err
    after = {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and p.name != ".lock.holder"}
    assert after == before  # nothing lost, nothing torn, no temporary files left


def test_atomic_writes_leave_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old\n")
    image = tmp_path / "a.png"
    write_image(image, np.zeros((4, 6, 3), np.uint8))
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the temporary name kept the extension
    write_image(tmp_path / "b.jpg", np.zeros((4, 6, 3), np.uint8))
    assert (tmp_path / "b.jpg").read_bytes()[:2] == b"\xff\xd8"

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("utils.files.os.fsync", full)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    with pytest.raises(OSError):
        write_image(image, np.full((4, 6, 3), 255, np.uint8))
    assert target.read_text() == "old\n" and png(image).max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "metrics.csv"]


class FakeLPIPS(torch.nn.Module):
    """Stands in for lpips.LPIPS: the per-pixel mean absolute difference, which a test can recompute."""

    def __init__(self, net="alex", spatial=False, verbose=True):
        super().__init__()
        self.spatial = spatial

    def forward(self, a, b):
        d = (a - b).abs().mean(dim=1, keepdim=True)
        return d if self.spatial else d.mean(dim=(2, 3), keepdim=True)


def fake_lpips_package(monkeypatch, fails_with=None):
    module = types.ModuleType("lpips")

    def build(**kwargs):
        if fails_with is not None:
            raise fails_with
        return FakeLPIPS(**kwargs)

    module.LPIPS = build
    monkeypatch.setitem(sys.modules, "lpips", module)


def test_lpips_and_the_diversity_score_when_lpips_is_available(photo_dir, weights, tmp_path, monkeypatch):
    fake_lpips_package(monkeypatch)
    summary, _ = run(recipe_for(photo_dir, weights, tmp_path / "results"))
    out = tmp_path / "results" / "set"
    for row in rows_of(out / "metrics.csv"):
        sr, hq = png(out / row["file"]).astype(float), png(photo_dir / row["image"]).astype(float)
        if row["image"] == "coffee.png":  # smaller than AlexNet can take
            assert row["lpips"] == ""
            continue
        assert float(row["lpips"]) == pytest.approx(np.abs(sr - hq).mean() / 127.5, abs=1e-5)
    for stat in rows_of(out / "diversity.csv"):
        if stat["image"] == "coffee.png":
            assert stat["diversity"] == ""
            continue
        hq = png(photo_dir / stat["image"]).astype(float)
        maps = np.stack([np.abs(png(out / f"{Path(stat['image']).stem}_t0.5_s{k}.png") - hq).mean(axis=2) / 127.5
                         for k in range(SAMPLES)])
        global_best, local_best = maps.mean(axis=(1, 2)).min(), maps.min(axis=0).mean()
        assert float(stat["diversity"]) == pytest.approx((global_best - local_best) / global_best * 100, abs=1e-3)
        assert 0 < float(stat["diversity"]) < 100
    assert "diversity" in summary[1] and "diversity" not in summary[0]  # t=0 is one deterministic result


@pytest.mark.parametrize("missing", ["package", "weights"])
def test_without_lpips_one_line_says_why_and_sample_std_stands_in(missing, photo_dir, weights, tmp_path,
                                                                  monkeypatch):
    if missing == "package":
        monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips raises ImportError
        why = "the optional `lpips` package is not installed"
    else:  # offline with an empty cache: torchvision's download fails
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_cache"))
        fake_lpips_package(monkeypatch, urllib.error.URLError("Name or service not known"))
        why = "AlexNet's weights could not be downloaded (URLError"
    summary, text = run(recipe_for(photo_dir, weights, tmp_path / "results"))
    assert sum(why in line for line in text.splitlines()) == 1
    assert "no diversity score" in text
    out = tmp_path / "results" / "set"
    assert "lpips" not in rows_of(out / "metrics.csv")[0] and "diversity" not in summary[1]
    assert float(summary[1]["sample_std"]) > 0


def test_real_lpips_from_a_cached_alexnet_without_downloading(tmp_path, monkeypatch):
    lpips = pytest.importorskip("lpips")
    import torchvision
    from inference.lpips_metric import load_lpips
    weights = torchvision.models.alexnet().state_dict()  # stands in for the cached file, read without a network
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", lambda *a, **k: weights)
    metric, why = load_lpips(torch.device("cpu"))
    assert metric is not None and why == ""
    a, b = (skimage.data.astronaut()[:64, :48], skimage.data.astronaut()[64:128, :48])
    reference = lpips.LPIPS(net="alex", verbose=False)
    t = lambda x: torch.from_numpy(x.transpose(2, 0, 1).copy())[None].float() / 127.5 - 1
    assert metric.distance(a, b) == pytest.approx(float(reference(t(a), t(b))), abs=1e-6)
    assert metric.spatial_map(a, b).shape == (64, 48)


def test_validation_leaves_out_images_too_small_for_ssim(image_dirs, tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    cv2.imwrite(str(val / "big.png"), cv2.imread(str(sorted(Path(image_dirs["val"]).glob("*.png"))[0])))
    for side in (8, 16):
        cv2.imwrite(str(val / f"tiny{side}.png"), np.full((side, side, 3), 128, np.uint8))
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "exp", niter=2, val_freq=2)
    recipe["datasets"]["val"]["dataroot_GT"] = str(val)
    with pytest.warns(UserWarning, match="tiny16.png: validation leaves it out"):
        trainer = Trainer(parse_options(recipe))
    metrics = trainer.fit()[-1]
    assert {"val/psnr", "val/ssim", "val/lr_psnr", "val/lr_psnr_bicubic"} <= set(metrics)
    assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("val/"))
    for side in (8, 16):
        (val / f"tiny{side}.png").rename(tmp_path / f"tiny{side}.png")
    (val / "big.png").unlink()
    cv2.imwrite(str(val / "tiny.png"), np.full((16, 16, 3), 128, np.uint8))
    recipe["path"]["experiments_root"] = str(tmp_path / "exp2")
    with pytest.raises(ConfigError, match="every validation image is smaller than SSIM needs"):
        Trainer(parse_options(recipe))


def test_the_nll_plot_places_stages_one_after_another():
    fig = nll_figure([("rrdb", 10, []), ("flow", 20, [(10, 3.0), (20, 2.5)]), ("joint", 20, [(10, 2.2), (20, 2.0)])])
    ax = fig.axes[0]
    curves = {line.get_label(): list(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "-"}
    assert curves == {"flow": [20, 30], "joint": [40, 50]}
    assert sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--") == [0, 10, 30, 50]


def test_validation_scores_diverged_values_as_black_or_white_and_says_so():
    from trainer.evaluators.sr_metrics import as_image
    sr = torch.tensor([[[[float("nan"), float("inf"), -float("inf"), 0.5, 7.0]]]])
    with pytest.warns(RuntimeWarning, match="3 non-finite values"):
        image = as_image(sr, "val t=0.8")
    assert image.tolist() == [[[[0.0, 1.0, 0.0, 0.5, 1.0]]]]
