"""Inference: padding, tiles, NaN fallback, weights lookup, and test.py's outputs and metrics."""
import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, run_test_py, save_random_weights, tiny_rrdb_recipe, tiny_test_srflow_recipe
from data.imresize import imresize
from inference.model import load_generator, parse_inference_options, weights_path
from inference.sr import conditioning, encode, lr_multiple, super_resolve
from models.weights import OFFICIAL_NAMES
from utils.errors import ConfigError
from utils.image import read_image
from utils.metrics import psnr_y, ssim_y
from utils.options import load_yaml


@pytest.fixture(scope="module")
def flow_setup(image_dirs, tmp_path_factory):
    """(recipe with random tiny SRFlow weights, tmp root)."""
    root = tmp_path_factory.mktemp("flow")
    weights = save_random_weights(tiny_test_srflow_recipe(image_dirs["val"], root), root / "weights.pth")
    return tiny_test_srflow_recipe(image_dirs["val"], root, weights), root


@pytest.fixture(scope="module")
def flow_net(flow_setup):
    return load_generator(parse_inference_options(flow_setup[0]))[0]


def test_odd_sizes_are_padded_and_cropped_back_and_t0_is_deterministic(flow_net):
    assert lr_multiple(flow_net) == 2
    lq = torch.rand(1, 3, 23, 31)
    a, b = super_resolve(flow_net, lq, 0.0), super_resolve(flow_net, lq, 0.0)
    assert a.image.shape == (1, 3, 92, 124) and a.temperature == 0 and a.diverged == 0
    assert torch.equal(a.image, b.image)


def test_one_rrdb_pass_serves_every_decode_of_an_image(flow_net, monkeypatch):
    lq = torch.rand(1, 3, 23, 31)  # padded inside: the shared pass must be of the padded image too
    alone = [super_resolve(flow_net, lq, t).image for t in (0.0, 0.7)]
    calls = []
    original = flow_net.rrdb_preprocessing
    monkeypatch.setattr(flow_net, "rrdb_preprocessing", lambda *a, **k: calls.append(1) or original(*a, **k))
    lr_enc = conditioning(flow_net, lq)
    torch.manual_seed(0)
    first = super_resolve(flow_net, lq, 0.7, lr_enc=lr_enc).image
    torch.manual_seed(0)
    again = super_resolve(flow_net, lq, 0.7).image
    shared = [super_resolve(flow_net, lq, t, lr_enc=lr_enc).image for t in (0.0, 0.7)]
    assert len(calls) == 2  # conditioning() once, and the call without lr_enc once
    assert torch.equal(shared[0], alone[0]) and torch.equal(first, again)
    assert shared[1].shape == alone[1].shape and not torch.equal(shared[1], alone[1])  # a fresh sample
    with pytest.raises(ValueError, match="tiles"):
        super_resolve(flow_net, lq, 0.0, tile=8, lr_enc=lr_enc)


def test_tiles_blend_into_the_whole_image(flow_net):
    lq = torch.rand(1, 3, 40, 36)
    whole = super_resolve(flow_net, lq, 0.0).image
    tiled = super_resolve(flow_net, lq, 0.0, tile=24, overlap=8).image
    assert tiled.shape == whole.shape
    assert psnr_y(tiled[0], whole[0]) > 35


def test_nan_fallback_steps_the_temperature_down(flow_net):
    hq = torch.rand(1, 3, 32, 32)
    lq = torch.nn.functional.avg_pool2d(hq, 4)
    wild = [z * 1e38 for z in encode(flow_net, hq, lq)]  # far outside any training distribution
    messages = []
    result = super_resolve(flow_net, lq, 1.0, latents=wild, name="wild", report=messages.append)
    assert result.temperature < 1.0 and result.diverged == 0 and torch.isfinite(result.image).all()
    assert "diverged pixel values at t=1 (non-finite or beyond +-100); retrying at t=0.75" in messages[0]
    assert "wild" in messages[-1] and "instead of t=1" in messages[-1]


def test_pixels_no_temperature_can_make_are_filled_in_from_bicubic(flow_net):
    lq = torch.rand(1, 3, 10, 12)

    def poison(_module, _inputs, out):  # the flow fails on one corner, at any temperature
        sr = out[0].clone()
        sr[..., :8, :8] = float("nan")
        return (sr, *out[1:])

    handle = flow_net.flowUpsamplerNet.register_forward_hook(poison)
    messages = []
    try:
        result = super_resolve(flow_net, lq, 0.8, name="poisoned", report=messages.append)
    finally:
        handle.remove()
    bicubic = imresize(lq, scale=4).clamp(0, 1)
    assert result.temperature == 0 and result.diverged == 3 * 8 * 8 and torch.isfinite(result.image).all()
    assert torch.equal(result.image[..., :8, :8], bicubic[..., :8, :8])
    assert not torch.equal(result.image[..., 8:, 8:], bicubic[..., 8:, 8:])
    assert "poisoned" in messages[-1] and "filled in from the bicubic upscaling" in messages[-1]


def test_weights_with_official_srflow_names_give_the_same_results(flow_setup, flow_net, tmp_path):
    recipe, _ = flow_setup
    official = {ours: theirs for theirs, ours in OFFICIAL_NAMES.items()}
    ours = torch.load(recipe["path"]["pretrain_model_generator"], weights_only=True)
    renamed = {".".join(official.get(p, p) for p in k.split(".")): v for k, v in ours.items()}
    assert any("RRDB_trunk" in k for k in renamed)
    torch.save(renamed, tmp_path / "official.pth")
    net, _ = load_generator(parse_inference_options(recipe), checkpoint=str(tmp_path / "official.pth"))
    lq = torch.rand(1, 3, 12, 10)
    assert torch.equal(super_resolve(net, lq).image, super_resolve(flow_net, lq).image)


def test_test_py_writes_results_and_its_metrics_equal_a_direct_computation(flow_setup, image_dirs, capsys):
    recipe, root = flow_setup
    path = root / "test_recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    assert run_test_py("-opt", str(path)) == 0
    out = root / "results" / "set"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    hq_files = sorted(Path(image_dirs["val"]).glob("*.png"))
    assert [r["image"] for r in rows] == [p.name for p in hq_files for _ in (0, 1)]  # t=0 and t=0.5, one each
    for row in rows:
        assert row["file"] == f"{Path(row['image']).stem}_t{float(row['temperature']):g}_s0.png"
        hq = read_image(Path(image_dirs["val"]) / row["image"])
        sr = read_image(out / row["file"])
        assert float(row["psnr_y"]) == pytest.approx(psnr_y(sr, hq, 4), abs=1e-9)
        assert float(row["ssim_y"]) == pytest.approx(ssim_y(sr, hq, 4), abs=1e-9)
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    mean_t0 = np.mean([float(r["psnr_y"]) for r in rows if float(r["temperature"]) == 0])
    assert [float(r["temperature"]) for r in summary] == [0.0, 0.5]
    assert float(summary[0]["psnr_y"]) == pytest.approx(mean_t0)
    assert "PSNR-Y" in capsys.readouterr().out


def test_rrdb_on_an_lq_folder_with_grey_rgba_and_corrupt_files(image_dirs, tmp_path):
    lq_dir = tmp_path / "lq"
    lq_dir.mkdir()
    img = cv2.imread(str(sorted(Path(image_dirs["val"]).glob("*.png"))[0]))[:21, :19]
    cv2.imwrite(str(lq_dir / "a_colour.png"), img)
    cv2.imwrite(str(lq_dir / "b_grey.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(lq_dir / "c_alpha.png"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    data = (lq_dir / "a_colour.png").read_bytes()
    (lq_dir / "d_truncated.png").write_bytes(data[:len(data) // 2])  # header fine, pixels missing
    (lq_dir / "e_garbage.png").write_bytes(b"not an image at all")
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "exp")
    del recipe["train"], recipe["steps"], recipe["eval"], recipe["logger"]
    recipe["datasets"] = {"test": {"name": "mine", "mode": "lq_folder", "dataroot_LQ": str(lq_dir)}}
    recipe["path"]["results_root"] = str(tmp_path / "results")
    recipe["path"]["pretrain_model_generator"] = save_random_weights(recipe, tmp_path / "rrdb.pth")
    messages = []
    from inference.test_runner import run_test
    summary = run_test(parse_inference_options(recipe), report=messages.append)["test"]
    assert [(r["temperature"], r["images"]) for r in summary] == [("", "3")]  # a plain SR net: no temperature
    text = "\n".join(messages)
    assert "b_grey.png: grey, converted to RGB" in text and "c_alpha.png: alpha channel dropped" in text
    assert "skipping" in text and "d_truncated.png" in text and "e_garbage.png" in text
    out = tmp_path / "results" / "mine"
    assert sorted(p.name for p in out.glob("*.png")) == ["a_colour.png", "b_grey.png", "c_alpha.png"]
    assert read_image(out / "b_grey.png").shape == (84, 76, 3)
    with open(out / "metrics.csv") as f:  # no HQ images: the rows name the files, and no metric columns
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["a_colour.png", "b_grey.png", "c_alpha.png"] and "psnr_y" not in rows[0]
    assert sorted(p.name for p in (out / "comparisons").iterdir()) == ["a_colour.png", "b_grey.png", "c_alpha.png"]


def test_weights_come_from_the_newest_checkpoint_else_a_clear_error(flow_setup, tmp_path, capsys):
    recipe, _ = flow_setup
    opt = parse_inference_options({**recipe, "path": {"experiments_root": str(tmp_path / "exp")}})
    with pytest.raises(ConfigError, match="no weights for network `generator`"):
        weights_path(opt, "generator")
    models, states = tmp_path / "exp" / "models", tmp_path / "exp" / "training_state"
    models.mkdir(parents=True)
    states.mkdir()
    for it in (10, 20):
        torch.save({}, models / f"{it}_generator.pth")
        torch.save({}, models / f"{it}_generator_ema.pth")
        torch.save({"model_files": {"generator": f"{it}_generator.pth", "generator_ema": f"{it}_generator_ema.pth"}},
                   states / f"{it}.state")
    assert weights_path(opt, "generator") == models / "20_generator_ema.pth"
    assert run_test_py("-opt", "no_such_recipe.yml") == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("test_recipe, train_recipe", [
    ("options/demo/test_srflow.yml", "options/demo/srflow.yml"),
    ("options/demo/test_rrdb.yml", "options/demo/rrdb_psnr.yml"),
    ("options/srflow/test_div2k_srflow.yml", "options/srflow/train_div2k_srflow.yml"),
])
def test_shipped_test_recipes_validate_and_match_their_training_recipes(test_recipe, train_recipe, tmp_path):
    weights = tmp_path / "w.pth"
    weights.touch()
    sets = load_yaml(ROOT / test_recipe)["datasets"]
    overrides = [f"path.pretrain_model_generator={weights}"]
    overrides += [f"datasets.test.{k}={tmp_path}" for k in ("dataroot_GT", "dataroot_LQ") if k in sets["test"]]
    opt = parse_inference_options(str(ROOT / test_recipe), overrides)
    assert opt["datasets"]["test"]["phase"] == "test"
    trained = load_yaml(ROOT / train_recipe)["networks"]["generator"]
    ignored = ("pretrain_rrdb", "train_RRDB", "train_RRDB_delay")  # weights and training only
    tested = load_yaml(ROOT / test_recipe)["networks"]["generator"]
    assert {k: v for k, v in trained.items() if k not in ignored} == tested
