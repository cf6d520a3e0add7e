"""Recipe parsing: overrides, validation messages, DLAS recipe shapes, and the CLI's exit status."""
import re
import subprocess
import sys
import warnings

import pytest
import yaml

from conftest import ROOT, tiny_rrdb_recipe, tiny_srflow_recipe
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.options import apply_override, check_temperatures, load_yaml, parse_options
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
    path = ROOT / "options" / "srflow" / recipe
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


def test_check_temperatures_names_the_bad_item():
    assert check_temperatures([0, "0.5", 1e-1], "val.heats") == [0.0, 0.5, 0.1]
    assert check_temperatures(0.7, "--temperature") == [0.7]
    for bad, where in (([0.0, -1], "`val.heats[1]`"), ([float("nan")], "`val.heats[0]`"),
                       ([float("inf")], "`val.heats[0]`"), (["warm"], "`val.heats[0]`"), ([True], "`val.heats[0]`")):
        with pytest.raises(ConfigError, match=re.escape(f"{where} must be a finite number >= 0")):
            check_temperatures(bad, "val.heats")
    with pytest.raises(ConfigError, match=r"`--temperature` must be a finite number >= 0 .*, got `-0.5`"):
        check_temperatures(-0.5, "--temperature")
    with pytest.raises(ConfigError, match="`test.heats` is empty"):
        check_temperatures([], "test.heats")


def test_heats_come_back_as_floats(image_dirs, tmp_path):
    opt = parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), ["val.heats=[0, 1]", "test.heats=[2e-1]"])
    assert opt["val"]["heats"] == [0.0, 1.0] and opt["test"]["heats"] == [0.2]
    assert all(type(t) is float for t in opt["val"]["heats"] + opt["test"]["heats"])


@pytest.mark.parametrize("override, message", [
    ("train.warmup_iter=-2", "`train.warmup_iter` must be an integer >= -1, got `-2`"),
    ("steps.generator.optimizer_params.eps=0", "`steps.generator.optimizer_params.eps` must be a number > 0"),
    ("steps.generator.optimizer_params.lr=.nan", "`steps.generator.optimizer_params.lr` must be a finite number > 0"),
    ("train.max_nan_skips=-1", "`train.max_nan_skips` must be an integer >= 0"),
    ("gpu_ids=[0, x]", "`gpu_ids[1]` must be an integer >= 0, got str `x`"),
    ("train.gen_lr_steps=[10, ~]", "`train.gen_lr_steps[1]` must be an integer >= 0, got nothing"),
    ("logger.visuals=[gen, 3]", "`logger.visuals[1]` must be a string, got int `3`"),
    ("datasets.train.paths=[3]", "`datasets.train.paths[0]` must be a string"),
    ("steps.generator.losses.pix.every=0", "`steps.generator.losses.pix.every` must be an integer >= 1"),
    ("networks.generator.nf=0", "`networks.generator.nf` must be an integer >= 1"),
])
def test_values_out_of_bounds_name_the_key_and_the_bound(image_dirs, tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), [override])


def test_several_problems_are_reported_on_one_line(image_dirs, tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), ["train.niter=0", "logger.print_freq=0"])
    text = str(err.value)
    assert "\n" not in text and "2 problems" in text
    assert "(1) `train.niter`" in text and "(2) `logger.print_freq`" in text


def test_srflow_sizes_must_suit_the_flow(image_dirs, tmp_path):
    recipe = tiny_srflow_recipe(image_dirs, tmp_path)
    assert parse_options(recipe, ["datasets.train.target_size=24"])["datasets"]["train"]["target_size"] == 24
    with pytest.raises(ConfigError, match=r"`datasets.train.target_size` is 28; it must be a multiple of 8 .*: e.g. "
                                          r"24 or 32"):
        parse_options(recipe, ["datasets.train.target_size=28"])
    # at 8x with 4 levels the HR sides must divide by 16: 24 is a multiple of the scale but not enough
    net = "networks.generator"
    eight = ["scale=8", f"{net}.scale=8", f"{net}.flow_scale=8", f"{net}.flow.L=4",
             "datasets.train.scale=8", "datasets.val.scale=8", "eval.evaluators.gaussian.dataset.scale=8",
             "eval.evaluators.gaussian.dataset.target_size=32"]
    with pytest.raises(ConfigError, match="`datasets.train.target_size` is 24; it must be a multiple of 16"):
        parse_options(recipe, eight + ["datasets.train.target_size=24", f"{net}.flow.patch_size=32"])


def test_duplicate_keys_name_the_path_and_lines(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("name: x\ntrain:\n  niter: 3\n  val_freq: 1\n  niter: 4\n")
    with pytest.raises(ConfigError, match=r"r\.yml, line 5: key `train.niter` is given twice \(first at line 3\)"):
        parse_options(path)
    path.write_text("name: x\nsteps:\n  g:\n    losses:\n      - {a: 1, a: 2}\n")
    with pytest.raises(ConfigError, match=r"key `steps.g.losses\[0\].a` is given twice"):
        load_yaml(path)
    with pytest.raises(ConfigError, match=r"--set, line 1: key `train.niter` is given twice"):
        apply_override({}, "train={niter: 1, niter: 2}")


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("base: &base {a: 1, b: 2}\nthere:\n  <<: *base\n  b: 3\n")
    assert load_yaml(path)["there"] == {"a": 1, "b": 3}


def test_self_nested_alias_is_refused(tmp_path):
    path = tmp_path / "r.yml"
    path.write_text("name: x\nloop: &loop [*loop]\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(path)


def test_input_path_of_the_wrong_kind_says_which(image_dirs, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"`datasets.train.paths`: `.*notes.txt` is a file; expected a folder"):
        parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), [f"datasets.train.paths={a_file}"])
    with pytest.raises(ConfigError, match=r"`path.pretrain_model_generator`: `.*` is a folder; expected a file"):
        parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), [f"path.pretrain_model_generator={tmp_path}"])


@pytest.mark.parametrize("key", ["path.experiments_root", "path.results_root"])
def test_output_folder_that_is_a_file_is_refused(image_dirs, tmp_path, key):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for value in (a_file, a_file / "below"):
        with pytest.raises(ConfigError, match=f"`{key}`: `{a_file}`.* is a file; expected a folder"):
            parse_options(tiny_rrdb_recipe(image_dirs, tmp_path / "exp"), [f"{key}={value}"])
