"""Recipe parsing: overrides, validation messages, DLAS recipe shapes, and the CLI's exit status."""
import subprocess
import sys
import warnings

import pytest
import yaml

from conftest import ROOT, tiny_rrdb_recipe
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.options import parse_options
from utils.registry import Registry


def test_set_overrides_nested_values_and_lists(image_dirs, tmp_path):
    opt = parse_options(tiny_rrdb_recipe(image_dirs, tmp_path),
                        ["train.niter=7", "datasets.train.batch_size=2", "train.gen_lr_steps=[1, 2]",
                         "steps.generator.optimizer_params.lr=1e-3"])
    assert opt["train"]["niter"] == 7
    assert opt["datasets"]["train"]["batch_size"] == 2
    assert opt["train"]["gen_lr_steps"] == [1, 2]
    assert opt["steps"]["generator"]["optimizer_params"]["lr"] == pytest.approx(1e-3)


def test_defaults_are_filled(image_dirs, tmp_path):
    opt = parse_options(tiny_rrdb_recipe(image_dirs, tmp_path))
    assert opt["train"]["mega_batch_factor"] == 1
    assert opt["steps"]["generator"]["injectors"]["gen_inj"]["every"] == 1
    assert opt["path"]["models"].endswith("models")


@pytest.mark.parametrize("override, message", [
    ("datasets.train.batch_szie=3", "did you mean `batch_size`?"),
    ("train.niter=abc", "`train.niter` must be an integer"),
    ("networks.generator.nf=1.5", "`networks.generator.nf` must be an integer"),
    ("datasets.train.paths=/no/such/folder", "`datasets.train.paths`: folder `/no/such/folder` does not exist"),
    ("logger.visual_debug_rat=3", "did you mean `visual_debug_rate`?"),
])
def test_mistakes_name_the_key(image_dirs, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("`", "`")):
        parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), [override])


def test_missing_required_key(image_dirs, tmp_path):
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path)
    del recipe["train"]["niter"]
    with pytest.raises(ConfigError, match="missing required key `train.niter`"):
        parse_options(recipe)


def test_a_recipe_without_steps_needs_no_niter_but_cannot_train():
    opt = parse_options("options/demo/test_srflow.yml")  # a test recipe: no `train` section at all
    assert "niter" not in opt["train"] and opt["steps"] == {}
    with pytest.raises(ConfigError, match="no `steps`: nothing to train"):
        Trainer(opt)


def test_disagreeing_scales_stop_and_top_level_quirk_warns(image_dirs, tmp_path):
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path)
    with pytest.raises(ConfigError, match="scales disagree"):
        parse_options(recipe, ["datasets.train.scale=2"])
    with pytest.warns(UserWarning, match="top-level `scale: 2`"):
        opt = parse_options(recipe, ["scale=2"])
    assert opt["scale"] == 4


def test_recipe_found_by_name_under_options():
    opt = parse_options("rrdb_psnr.yml")
    assert opt["name"] == "demo_rrdb_psnr"


@pytest.mark.parametrize("recipe", ["train_div2k_rrdb_psnr.yml", "train_div2k_srflow.yml"])
def test_dlas_recipes_parse_with_paths_changed(recipe, image_dirs, tmp_path):
    path = next(ROOT.glob(f"options/srflow/{recipe}"), None)
    if path is None:
        pytest.skip(f"{recipe} not written yet")
    raw = yaml.safe_load(path.read_text())
    overrides = [f"datasets.train.paths={image_dirs['train']}"]
    if "val" in raw.get("datasets", {}):
        overrides.append(f"datasets.val.dataroot_GT={image_dirs['val']}")
    for name in raw.get("eval", {}).get("evaluators", {}) or {}:
        overrides.append(f"eval.evaluators.{name}.dataset.paths={image_dirs['val']}")
    if "pretrain_rrdb" in raw["networks"]["generator"]:
        weights = tmp_path / "rrdb.pth"
        weights.write_bytes(b"")
        overrides.append(f"networks.generator.pretrain_rrdb={weights}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = parse_options(path, overrides)
    assert opt["networks"]["generator"]["which_model_G"] == raw["networks"]["generator"]["which_model_G"]


def test_registry_lists_known_names():
    reg = Registry("widget")
    reg.register("alpha")(object)
    reg.register("beta")(object)
    with pytest.raises(ConfigError, match=r"unknown widget `alpah` at `x.type` \(did you mean `alpha`\?\); "
                                          r"known: alpha, beta"):
        reg.get("alpah", "x.type")


def test_cli_exits_2_with_one_clear_message(image_dirs, tmp_path):
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump(tiny_rrdb_recipe(image_dirs, tmp_path / "exp")))
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), "-opt", str(recipe),
                          "--set", "datasets.train.batch_szie=3"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert "`datasets.train.batch_szie` (did you mean `batch_size`?)" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), "-opt", "no_such_recipe.yml"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "not found" in run.stderr and "Traceback" not in run.stderr


def test_wandb_without_the_package_is_a_clear_error(image_dirs, tmp_path):
    import importlib.util
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    from trainer.trainer import Trainer
    with pytest.raises(ConfigError, match="optional `wandb` package"):
        Trainer(parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), ["wandb=true"]))
