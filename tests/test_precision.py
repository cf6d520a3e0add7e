"""bf16 on the CPU: float32 untouched, bf16 within SRFlow's quality bounds, float32 and a note on CPUs without it."""
import csv
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from conftest import run_test_py, tiny_srflow_recipe, tiny_test_srflow_recipe
from data.imresize import imresize
from inference.model import load_generator, parse_inference_options
from trainer.trainer import Trainer
from utils import precision
from utils.options import parse_options

NATIVE_BF16 = precision.cpu_bf16_feature() is not None
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512_BF16 or AMX)")
ITERATIONS = 60


def train(image_dirs, root: Path, fp16: bool):
    """A short joint SRFlow training (RRDB and flow), validated once at its end, all in float32 or all in bf16
    (training and validation); (trainer, final metrics)."""
    recipe = tiny_srflow_recipe(image_dirs, root, None, niter=ITERATIONS, val_freq=ITERATIONS)
    recipe["networks"]["generator"]["train_RRDB"] = True
    recipe["logger"]["save_checkpoint_freq"] = ITERATIONS
    recipe["fp16"] = fp16
    recipe["precision"] = "bf16" if fp16 else "float32"
    trainer = Trainer(parse_options(recipe))
    return trainer, trainer.fit()[-1]


@pytest.fixture(scope="module")
def float32_run(image_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("float32_run")
    trainer, metrics = train(image_dirs, root, fp16=False)
    return {"weights": str(root / "models" / f"{ITERATIONS}_generator.pth"), "metrics": metrics, "root": root}


def images(folder: str):
    """(name, HQ 1x3xHxW in [0, 1] cut to multiples of 16, its 4x bicubic LR) of each PNG in `folder`."""
    for path in sorted(Path(folder).glob("*.png")):
        hq = torch.from_numpy(cv2.imread(str(path))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        hq = hq[..., :hq.shape[-2] // 16 * 16, :hq.shape[-1] // 16 * 16]
        yield path.name, hq, imresize(hq, scale=1 / 4).clamp(0, 1)


def run_test(recipe: dict, root: Path, *flags: str) -> dict:
    """test.py on `recipe` into root/results; {(image, temperature): psnr_y} of its metrics.csv."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    assert run_test_py("-opt", str(path), "--set", f"path.results_root={root / 'results'}", *flags) == 0
    with open(root / "results" / "set" / "metrics.csv") as f:
        return {(r["image"], float(r["temperature"])): float(r["psnr_y"]) for r in csv.DictReader(f)}


@needs_bf16
def test_a_short_bf16_training_reaches_the_float32_validation_nll_within_1_percent(image_dirs, tmp_path, float32_run):
    trainer, metrics = train(image_dirs, tmp_path, fp16=True)
    assert trainer.amp_dtype == trainer.val_dtype == torch.bfloat16
    ours, reference = metrics["gaussian/nll_bpd"], float32_run["metrics"]["gaussian/nll_bpd"]
    assert abs(ours - reference) <= 0.01 * abs(reference)
    assert metrics["gaussian/nll_bpd"] != reference  # it did train in another precision
    assert metrics["val/psnr_bicubic"] == float32_run["metrics"]["val/psnr_bicubic"]  # baselines stay float32


@needs_bf16
def test_bf16_mean_image_is_within_0_05_db_of_float32(image_dirs, tmp_path, float32_run, capsys):
    recipe = tiny_test_srflow_recipe(image_dirs["val"], tmp_path, float32_run["weights"])
    recipe["test"]["heats"] = [0.0]
    float32 = run_test(recipe, tmp_path / "float32")
    bf16 = run_test(recipe, tmp_path / "bf16", "--precision", "bf16")
    assert "in bf16" in capsys.readouterr().out
    assert float32.keys() == bf16.keys() and len(float32) == 2
    for key, psnr in float32.items():
        assert abs(bf16[key] - psnr) <= 0.05, key
    assert bf16 != float32  # bf16 did run


@needs_bf16
def test_bf16_encode_then_decode_at_t1_returns_the_input_within_1_of_255(image_dirs, float32_run):
    recipe = tiny_test_srflow_recipe(image_dirs["val"], float32_run["root"], float32_run["weights"])
    net = load_generator(parse_inference_options(recipe))[0]
    for name, hq, lq in images(image_dirs["train"]):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            epses, nll, _ = net(gt=hq, lr=lq, epses=[], add_gt_noise=False)
            back = net(lr=lq, reverse=True, epses=epses)[0]
        assert all(e.dtype == torch.float32 for e in epses) and nll.dtype == torch.float32
        assert (back - hq).abs().max() <= 1 / 255, name


def test_float32_inference_runs_without_autocast_and_keeps_its_settings(image_dirs, tmp_path, float32_run,
                                                                          monkeypatch):
    """precision float32 (the default) is the path of old: no autocast anywhere, the same settings.json (so
    earlier results resume), and results equal to a plain call of the network, bit for bit."""
    seen = []
    original = torch.nn.Module.__call__

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", spy)
    recipe = tiny_test_srflow_recipe(image_dirs["val"], tmp_path, float32_run["weights"])
    recipe["test"]["heats"] = [0.0]
    run_test(recipe, tmp_path)
    assert seen and not any(seen)
    settings = yaml.safe_load((tmp_path / "results" / "set" / "settings.json").read_text())
    assert "precision" not in settings
    net = load_generator(parse_inference_options(recipe))[0]
    for name, hq, lq in images(image_dirs["val"]):
        with torch.no_grad():
            sr = net(lr=lq, eps_std=0, reverse=True)[0].clamp(0, 1)
        written = cv2.imread(str(tmp_path / "results" / "set" / f"{Path(name).stem}_t0_s0.png"))[..., ::-1]
        expected = (sr[0] * 255).round().byte().permute(1, 2, 0).numpy()[:written.shape[0], :written.shape[1]]
        assert (written == expected).all(), name


def test_a_cpu_without_native_bf16_gets_a_note_and_float32(image_dirs, tmp_path, float32_run, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: None)
    dtype, note = precision.autocast_dtype("bf16", torch.device("cpu"), "precision: bf16")
    assert dtype is None and "no native bf16" in note and "float32" in note
    recipe = tiny_test_srflow_recipe(image_dirs["val"], tmp_path, float32_run["weights"])
    recipe["test"]["heats"] = [0.0]
    asked = run_test(recipe, tmp_path / "asked", "--precision", "bf16")
    out = capsys.readouterr().out
    assert out.count("no native bf16") == 1 and " in bf16" not in out
    assert asked == run_test(recipe, tmp_path / "plain")  # the float32 path itself: no slowdown
    trainer = Trainer(parse_options(tiny_srflow_recipe(image_dirs, tmp_path / "run", None, niter=1)
                                    | {"fp16": True}))
    assert trainer.amp_dtype is None and trainer.autocast().__class__.__name__ == "nullcontext"
    trainer.close()


def test_an_unknown_precision_is_one_line_before_anything_loads(image_dirs, tmp_path, capsys):
    recipe = tiny_test_srflow_recipe(image_dirs["val"], tmp_path)
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    assert run_test_py("-opt", str(path), "--set", "precision=fp8") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "`precision` must be one of float32, bf16, got `fp8`" in err
