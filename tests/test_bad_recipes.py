"""Mistaken recipes through the real entry points: each exits 2 before anything heavy starts, with one line on
stderr that names the key path (or file) and no traceback."""
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import torch
import yaml

import test as test_py
import train as train_py
from conftest import tiny_rrdb_recipe, tiny_srflow_recipe
from models import build_network
from utils.folder_lock import HOLDER_NAME, LOCK_NAME
from utils.options import parse_options

SRFLOW_NET = "networks.generator"
ADAM = "steps.generator.optimizer_params"


def put(recipe: Dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key in a recipe dict (creating sections), as a user editing the YAML would."""
    *sections, last = dotted.split(".")
    node = recipe
    for key in sections:
        node = node.setdefault(key, {})
    node[last] = value


def tiny_test_recipe(image_dirs: Dict[str, str], root: Path, weights: str) -> Dict[str, Any]:
    """A test.py recipe: the tiny RRDB, a folder of LQ images, no training sections."""
    recipe = tiny_rrdb_recipe(image_dirs, root / "experiments")
    for key in ("steps", "train", "eval", "logger"):
        del recipe[key]
    recipe["datasets"] = {"test": {"name": "set", "mode": "lq_folder", "dataroot_LQ": image_dirs["val"]}}
    recipe["path"].update(pretrain_model_generator=weights, results_root=str(root / "results"))
    return recipe


@pytest.fixture(scope="module")
def rrdb_weights(image_dirs, tmp_path_factory) -> str:
    """Weights of the tiny RRDB (untrained: these tests need a file that loads, not a good model)."""
    root = tmp_path_factory.mktemp("weights")
    opt = parse_options(tiny_rrdb_recipe(image_dirs, root / "experiments"))
    path = root / "rrdb.pth"
    torch.save(build_network(opt["networks"]["generator"], opt).state_dict(), path)
    return str(path)


def run_main(main: Callable[[List[str]], int], recipe: Dict[str, Any], tmp_path: Path, capsys,
             args: List[str] = ()) -> str:
    """Write `recipe` to a YAML file, run `main` on it and return its stderr, checking the exit contract."""
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    outputs = [Path(p) for p in (recipe.get("path", {}).get(k) for k in ("experiments_root", "results_root")) if p]
    before = [_snapshot(p) for p in outputs]
    status = main(["-opt", str(path), *args])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert [_snapshot(p) for p in outputs] == before, "a mistake must be found before anything is written"
    return err


def _snapshot(path: Path) -> Any:
    """What is at `path`: nothing, a file, or a folder's files. The run's lock files do not count: a weights
    file is read once the run holds its folder, and a lock that is not held blocks no later run."""
    if not path.exists():
        return None
    if not path.is_dir():
        return "a file"
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.name not in (LOCK_NAME, HOLDER_NAME)) or None


# (recipe maker, dotted key, value, what the message must say)
TRAIN_MISTAKES = [
    ("rrdb", "train.niter", 0, "`train.niter` must be an integer >= 1, got `0`"),
    ("rrdb", "train.niter", -5, "`train.niter` must be an integer >= 1"),
    ("rrdb", f"{ADAM}.lr", -1e-3, f"`{ADAM}.lr` must be a number > 0"),
    ("rrdb", f"{ADAM}.lr", 0, f"`{ADAM}.lr` must be a number > 0"),
    ("rrdb", f"{ADAM}.beta2", 1.0, f"`{ADAM}.beta2` must be a number >= 0 and < 1"),
    ("rrdb", f"{ADAM}.weight_decay", -0.1, f"`{ADAM}.weight_decay` must be a number >= 0"),
    ("rrdb", "train.val_freq", 0, "`train.val_freq` must be an integer >= 1"),
    ("rrdb", "logger.save_checkpoint_freq", 0, "`logger.save_checkpoint_freq` must be an integer >= 1"),
    ("rrdb", "logger.print_freq", 0, "`logger.print_freq` must be an integer >= 1"),
    ("rrdb", "logger.keep_checkpoints", -1, "`logger.keep_checkpoints` must be an integer >= 0"),
    ("rrdb", "train.gen_lr_steps", ["ten"], "`train.gen_lr_steps[0]` must be an integer >= 0, got str `ten`"),
    ("rrdb", "train.ema_decay", 1.5, "`train.ema_decay` must be a number >= 0 and < 1"),
    ("rrdb", "train.mega_batch_factor", 0, "`train.mega_batch_factor` must be an integer >= 1"),
    ("rrdb", "datasets.train.batch_size", 0, "`datasets.train.batch_size` must be an integer >= 1"),
    ("rrdb", "datasets.train.n_workers", -1, "`datasets.train.n_workers` must be an integer >= 0"),
    ("rrdb", "datasets.train.target_size", 30, "`datasets.train.target_size` is 30; it must be a multiple of 4"),
    ("rrdb", "steps.generator.clip_grad_norm", float("nan"),
     "`steps.generator.clip_grad_norm` must be a finite number"),
    ("rrdb", "path.experiments_root", "FILE", "`path.experiments_root`: "),
    ("srflow", "val.heats", [0.0, -0.5], "`val.heats[1]` must be a finite number >= 0"),
    ("srflow", "val.heats", [float("nan")], "`val.heats[0]` must be a finite number >= 0"),
    ("srflow", "val.heats", ["warm"], "`val.heats[0]` must be a finite number >= 0"),
    ("srflow", "val.samples", 0, "`val.samples` must be an integer >= 1"),
    ("srflow", f"{SRFLOW_NET}.flow.L", 0, f"`{SRFLOW_NET}.flow.L` must be an integer >= 1"),
    ("srflow", f"{SRFLOW_NET}.flow.K", 0, f"`{SRFLOW_NET}.flow.K` must be an integer >= 1"),
    ("srflow", f"{SRFLOW_NET}.flow.K", [0, 2, 0, 2], f"`{SRFLOW_NET}.flow.K[2]` must be >= 1"),
    ("srflow", "datasets.train.target_size", 36, "`datasets.train.target_size` is 36; it must be a multiple of 8"),
    ("srflow", "eval.evaluators.gaussian.dataset.target_size", 20,
     "`eval.evaluators.gaussian.dataset.target_size` is 20; it must be a multiple of 8"),
    ("srflow", f"{SRFLOW_NET}.flow.patch_size", 36,
     f"`{SRFLOW_NET}.flow.patch_size` is 36; it must be a multiple of 8"),
    ("srflow", f"{SRFLOW_NET}.initial_stride", 2, f"`{SRFLOW_NET}.flow_scale` / `{SRFLOW_NET}.initial_stride`"),
]


@pytest.mark.parametrize("kind, key, value, message", TRAIN_MISTAKES, ids=[f"{m[1]}={m[2]}" for m in TRAIN_MISTAKES])
def test_train_refuses_a_bad_value(kind, key, value, message, image_dirs, tmp_path, capsys):
    recipe = (tiny_srflow_recipe if kind == "srflow" else tiny_rrdb_recipe)(image_dirs, tmp_path / "exp")
    if value == "FILE":
        value = tmp_path / "a_file"
        value.write_text("not a folder")
        value = str(value)
    if key.endswith("flow.K") and isinstance(value, list):
        del recipe["networks"]["generator"]["K"]  # a per-level list lives in flow.K alone
    put(recipe, key, value)
    assert message in run_main(train_py.main, recipe, tmp_path, capsys)
    assert not (tmp_path / "exp").exists(), "nothing may be written for a refused recipe"


def test_both_srflow_ks_zero_is_one_line_naming_both(image_dirs, tmp_path, capsys):
    recipe = tiny_srflow_recipe(image_dirs, tmp_path / "exp")
    put(recipe, f"{SRFLOW_NET}.K", 0)
    put(recipe, f"{SRFLOW_NET}.flow.K", 0)
    err = run_main(train_py.main, recipe, tmp_path, capsys)
    assert f"`{SRFLOW_NET}.K` must be" in err and f"`{SRFLOW_NET}.flow.K` must be" in err


TEST_MISTAKES = [
    ("test.heats", [0.0, "hot"], "`test.heats[1]` must be a finite number >= 0"),
    ("test.heats", [float("inf")], "`test.heats[0]` must be a finite number >= 0"),
    ("test.crop_border", -1, "`test.crop_border` must be an integer >= 0"),
    ("test.tile", -64, "`test.tile` (--tile) must be 0 (whole images) or at least 16 LR pixels, got -64"),
    ("test.tile", 1, "`test.tile` (--tile) must be 0 (whole images) or at least 16 LR pixels, got 1"),
    ("test.tile", 2, "`test.tile` (--tile) must be 0 (whole images) or at least 16 LR pixels, got 2"),
    ("test.samples", 1000000, "`test.samples` must be an integer >= 1 and < 101"),
    ("test.tile_overlap", -1, "`test.tile_overlap` must be an integer >= 0"),
    ("path.results_root", "FILE", "`path.results_root`: "),
    ("path.pretrain_model_generator", "FOLDER", "`path.pretrain_model_generator`: "),
]


@pytest.mark.parametrize("key, value, message", TEST_MISTAKES, ids=[f"{m[0]}={m[1]}" for m in TEST_MISTAKES])
def test_test_py_refuses_a_bad_value(key, value, message, image_dirs, rrdb_weights, tmp_path, capsys):
    recipe = tiny_test_recipe(image_dirs, tmp_path, rrdb_weights)
    if value == "FILE":
        value = tmp_path / "a_file"
        value.write_text("not a folder")
    elif value == "FOLDER":
        value = tmp_path / "weights_folder"
        value.mkdir()
    put(recipe, key, str(value) if isinstance(value, Path) else value)
    err = run_main(test_py.main, recipe, tmp_path, capsys)
    assert message in err
    if value == tmp_path / "weights_folder":
        assert "is a folder; expected a file" in err


def test_test_py_runs_the_tiny_test_recipe(image_dirs, rrdb_weights, tmp_path, capsys):
    """The recipe the mistakes above start from is a good one: only the mistake makes them fail."""
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(tiny_test_recipe(image_dirs, tmp_path, rrdb_weights)))
    assert test_py.main(["-opt", str(path)]) == 0
    assert {"0.png", "1.png"} <= {p.name for p in (tmp_path / "results" / "set").iterdir()}


@pytest.mark.parametrize("write, message", [
    (lambda p, good: p.write_bytes(good[: len(good) // 2]), "is truncated"),
    (lambda p, good: p.write_text("epoch 10: psnr 24.1\n"), "is a text file"),
    (lambda p, good: p.write_bytes(b""), "is empty"),
], ids=["truncated", "text", "empty"])
def test_test_py_names_a_bad_weights_file(write, message, image_dirs, rrdb_weights, tmp_path, capsys):
    weights = tmp_path / "bad.pth"
    write(weights, Path(rrdb_weights).read_bytes())
    err = run_main(test_py.main, tiny_test_recipe(image_dirs, tmp_path, str(weights)), tmp_path, capsys)
    assert f"`{weights}` {message}" in err


def test_train_names_a_bad_pretrain_model_file(image_dirs, tmp_path, capsys):
    weights = tmp_path / "pretrained.pth"
    weights.write_text("<html>404 Not Found</html>")
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "exp")
    put(recipe, "path.pretrain_model_generator", str(weights))
    assert f"`{weights}` is a text file" in run_main(train_py.main, recipe, tmp_path, capsys)


def test_train_names_a_bad_pretrain_rrdb_file(image_dirs, rrdb_weights, tmp_path, capsys):
    weights = tmp_path / "rrdb.pth"
    weights.write_bytes(Path(rrdb_weights).read_bytes()[:100])
    recipe = tiny_srflow_recipe(image_dirs, tmp_path / "exp", pretrain_rrdb=str(weights))
    assert f"`{weights}` is truncated" in run_main(train_py.main, recipe, tmp_path, capsys)


def test_duplicate_top_level_section_is_refused(image_dirs, tmp_path, capsys):
    text = yaml.safe_dump(tiny_rrdb_recipe(image_dirs, tmp_path / "exp"), sort_keys=False)
    path = tmp_path / "recipe.yml"
    path.write_text(text + "train:\n  niter: 5\n")
    status = train_py.main(["-opt", str(path)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "key `train` is given twice" in err and f"line {len(text.splitlines()) + 1}" in err


def test_alias_bomb_is_refused_quickly(tmp_path, capsys):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")  # 9**9 strings once expanded
    path = tmp_path / "bomb.yml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    status = train_py.main(["-opt", str(path)])
    assert time.perf_counter() - start < 2
    err = capsys.readouterr().err
    assert status == 2 and "aliases" in err and "Traceback" not in err


def test_test_py_checks_its_tile_flag_as_the_recipe_key(capsys):
    import test as test_py
    for tile in ("-8", "1", "2", "15"):
        assert test_py.main(["-opt", "test_srflow.yml", "--tile", tile]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"`test.tile` (--tile) must be 0 (whole images) or at least 16 LR pixels, got {tile}" \
            in err[0], err
