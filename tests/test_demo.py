"""The demos' closing pictures and their benchmark: `make demo` (train.py --resume auto, then
scripts/demo_report.py), the SRFlow pipeline's pictures, and scripts/bench_demo_gain.py on a folder."""
import importlib.util
import re

import cv2
import numpy as np
import pytest

import data.photos
import train as train_py
from conftest import ROOT, smooth_image, tiny_rrdb_recipe, tiny_srflow_recipe
from data.imresize import imresize
from inference.showcase import compare_networks
from inference.zoomed_comparison import detail, detail_box, zoomed_rows
from trainer.trainer import Trainer
from utils.image import read_image
from utils.metrics import psnr_y
from utils.options import parse_options


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_report, bench = _script("demo_report"), _script("bench_demo_gain")
DEMO = str(ROOT / "options" / "demo" / "rrdb_psnr.yml")
TINY_NET = ["networks.generator.nf=8", "networks.generator.nb=1", "networks.generator.gc=4"]


def tiny_demo(image_dirs, root):
    """--set values that shrink the demo recipe to two iterations of a tiny network on small images."""
    return [f"{key}={value}" for key, value in (
        ("train.niter", 2), ("train.val_freq", 2), ("train.warmup_iter", -1), ("logger.save_checkpoint_freq", 2),
        ("use_tb_logger", "false"), ("datasets.train.target_size", 32), ("datasets.train.batch_size", 2),
        ("datasets.train.n_workers", 0), ("datasets.train.paths", image_dirs["train"]),
        ("datasets.val.dataroot_GT", image_dirs["val"]), ("path.experiments_root", root))] + TINY_NET


def sets(values):
    return [a for v in values for a in ("--set", v)]


def test_make_demo_trains_once_then_reports_with_a_picture(image_dirs, tmp_path, capsys):
    overrides = sets(tiny_demo(image_dirs, tmp_path / "run"))
    assert train_py.main(["-opt", DEMO, "--resume", "auto", *overrides]) == 0  # as the Makefile runs it
    weights = sorted((tmp_path / "run" / "models").iterdir())
    stamps = [p.stat().st_mtime_ns for p in weights]
    assert train_py.main(["-opt", DEMO, "--resume", "auto", *overrides]) == 0  # `make demo` again: no training
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "run" / "models").iterdir())] == stamps
    capsys.readouterr()

    assert demo_report.main(["-opt", DEMO, *overrides]) == 0
    out = capsys.readouterr().out
    assert "2_generator_ema.pth" in out  # the demo keeps a moving average, and the report uses it
    lines = re.findall(r"  (\d): bicubic ([\d.]+) dB, demo SR ([\d.]+) dB \(([-+][\d.]+)\); picture: (\S+)", out)
    assert [line[0] for line in lines] == ["0", "1"]
    for name, bicubic, sr, gain, path in lines:
        assert abs(float(sr) - float(bicubic) - float(gain)) <= 0.011
        hq = read_image(f"{image_dirs['val']}/{name}.png")
        hq = hq[:hq.shape[0] // 8 * 8, :hq.shape[1] // 8 * 8]  # validation's cut: scale 4 x force_multiple 2
        baseline = imresize(np.clip(imresize(hq, scale=1 / 4), 0, 1), scale=4)
        assert float(bicubic) == pytest.approx(psnr_y(baseline, hq, 4), abs=0.011)
        picture = read_image(path)  # two rows (whole, zoomed) of three panels (bicubic, SR, HQ), each >= 192 px
        assert picture.shape[0] > 2 * 192 and picture.shape[1] > 3 * 160
    assert "mean of 2: bicubic" in out


def test_the_zoomed_rows_show_the_most_detailed_window_enlarged():
    rng = np.random.default_rng(0)
    hq = np.full((64, 96, 3), 128, np.uint8)
    hq[40:56, 8:32] = rng.integers(0, 256, (16, 24, 3))  # the only texture: the window must cover it
    blurred = cv2.GaussianBlur(hq, (5, 5), 2)
    assert detail(blurred) < detail(hq)
    top, left, h, w = detail_box(hq, zoom=4)
    assert (h, w) == (16, 24) and abs(top - 40) <= 2 and abs(left - 8) <= 2
    rows, box = zoomed_rows([("bicubic", "", blurred), ("HQ", "", hq)], zoom=4)
    assert [len(row) for row in rows] == [2, 2] and box == (top, left, h, w)
    enlarged = rows[1][1][2]
    assert enlarged.shape == hq.shape
    assert np.array_equal(enlarged[::4, ::4], hq[top:top + h, left:left + w])  # nearest neighbour, x4
    assert rows[1][1][0] == "HQ (zoom x4)"


def test_the_srflow_pictures_show_the_mean_and_samples_beside_stage_1(image_dirs, tmp_path):
    rrdb_opt = parse_options(tiny_rrdb_recipe(image_dirs, tmp_path / "rrdb", niter=2, val_freq=2))
    Trainer(rrdb_opt).fit()
    rrdb_weights = tmp_path / "rrdb" / "models" / "2_generator.pth"
    flow = tiny_srflow_recipe(image_dirs, tmp_path / "flow", niter=2, val_freq=2)
    flow["networks"]["generator"]["nb"] = 1
    flow["networks"]["generator"]["flow"]["stackRRDB"]["blocks"] = [0]
    flow_opt = parse_options(flow, [f"networks.generator.pretrain_rrdb={rrdb_weights}"])
    Trainer(flow_opt).fit()
    lines = compare_networks([("rrdb", rrdb_opt, rrdb_weights),
                              ("flow", flow_opt, tmp_path / "flow" / "models" / "2_generator.pth")], tmp_path / "pics")
    first = lines[0]
    for label in ("bicubic", "rrdb", "flow t=0", "flow t=0.8 #1", "flow t=0.8 #2"):
        assert f"{label} " in first
    assert "mean detail" in lines[-1] and "HQ" in lines[-1]
    picture = read_image(tmp_path / "pics" / "0.png")  # 2 rows of 6 panels
    assert picture.shape[0] > 2 * 192 and picture.shape[1] > 6 * 160


def test_bench_prints_the_gain_per_photo_of_a_folder(image_dirs, tmp_path, capsys):
    assert train_py.main(["-opt", DEMO, *sets(tiny_demo(image_dirs, tmp_path / "run"))]) == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    colour = smooth_image(rng, 70, 90)  # cut to 68x88 for scale 4
    cv2.imwrite(str(photos / "colour.png"), colour[:, :, ::-1])
    cv2.imwrite(str(photos / "grey.png"), smooth_image(rng, 64, 64)[:, :, 0])
    capsys.readouterr()
    run = [f"path.experiments_root={tmp_path / 'run'}"]  # its newest checkpoint is the default
    assert bench.main(["--photos", str(photos), "-opt", DEMO, *sets(TINY_NET + run)]) == 0
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^(\S+\.png)\s+\d+x\d+\s+([\d.]+) dB", out, re.M))
    assert set(rows) == {"colour.png", "grey.png"} and "grey, converted to RGB" in out
    hq = colour[:68, :88].astype(np.float32) / 255
    baseline = imresize(np.clip(imresize(hq, scale=1 / 4), 0, 1), scale=4)
    assert float(rows["colour.png"]) == pytest.approx(psnr_y(baseline, hq, 4), abs=0.011)
    assert re.search(r"mean gain over bicubic [-+][\d.]+ dB on 2 photos; \d of 2 above bicubic", out)

    (tmp_path / "empty").mkdir()
    assert bench.main(["--photos", str(tmp_path / "empty"), "-opt", DEMO, *sets(TINY_NET)]) == 2
    assert "--photos" in capsys.readouterr().err


def test_the_benchmark_photos_are_neither_training_nor_validation_photos():
    photos = bench.default_photos()  # files of installed packages: nothing is downloaded
    bundled = {f"{name}.png" for _, names in data.photos.SPLITS for name in names}
    assert len(photos) == 7 and not set(photos) & bundled
    for img in photos.values():
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256


def test_make_demo_esrgan_fine_tunes_stage_one_and_compares_the_two(image_dirs, tmp_path, monkeypatch, capsys):
    """`make demo-esrgan`, shrunk: stage 1, the GAN fine-tune from its weights, then pictures of bicubic |
    stage-1 RRDB | GAN | HQ with Y-PSNR, LR-PSNR and detail."""
    monkeypatch.chdir(tmp_path)  # the baseline recipe's run is found where it would be: experiments/<name>
    stage1 = [v for v in tiny_demo(image_dirs, tmp_path / "experiments" / "demo_rrdb_psnr") if v not in TINY_NET]
    assert train_py.main(["-opt", DEMO, *sets(stage1)]) == 0
    esrgan = str(ROOT / "options" / "demo" / "esrgan.yml")
    gan = [v for v in tiny_demo(image_dirs, tmp_path / "experiments" / "demo_esrgan") if v not in TINY_NET]
    gan += ["networks.discriminator.image_size=32",
            f"path.pretrain_model_generator={tmp_path / 'experiments/demo_rrdb_psnr/models/2_generator_ema.pth'}"]
    assert train_py.main(["-opt", esrgan, *sets(gan)]) == 0
    capsys.readouterr()
    assert demo_report.main(["-opt", esrgan, *sets(gan + ["path.pretrain_model_generator="]), "--label", "GAN",
                             "--baseline", DEMO, "--baseline-label", "stage-1 RRDB", "--lr-psnr"]) == 0
    out = capsys.readouterr().out
    assert "demo_esrgan/models/2_generator_ema.pth" in out and "demo_rrdb_psnr/models/2_generator_ema.pth" in out
    assert re.search(r"  0: bicubic [\d.]+ dB, stage-1 RRDB [\d.]+ dB \([-+][\d.]+\), GAN [\d.]+ dB", out)
    assert re.search(r"mean LR-PSNR .*: bicubic [\d.]+ dB, stage-1 RRDB [\d.]+ dB, GAN [\d.]+ dB", out)
    assert re.search(r"mean detail .*: bicubic [\d.]+, stage-1 RRDB [\d.]+, GAN [\d.]+, HQ [\d.]+", out)
    picture = read_image(tmp_path / "experiments" / "demo_esrgan" / "comparison" / "0.png")
    assert picture.shape[1] > 4 * 80  # four panels side by side
