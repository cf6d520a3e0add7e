"""Reliability: non-finite losses counted per step, a portable folder lock, names that are paths, values a
schema lets through, and failing cleanly (a failed start, data that changes mid-run, images too small)."""
import copy
import re
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, tiny_rrdb_recipe
from trainer.trainer import Trainer
from utils.errors import ConfigError, TrainingStopped
from utils.folder_lock import LOCK_FILES, FolderLock
from utils.options import parse_options


def two_step_recipe(image_dirs, root):
    """The tiny recipe with a second step training the same generator (as a GAN's two steps do)."""
    recipe = tiny_rrdb_recipe(image_dirs, root, niter=40)
    recipe["steps"]["second"] = copy.deepcopy(recipe["steps"]["generator"])
    return recipe


def test_a_step_that_is_always_non_finite_stops_the_run_while_another_is_finite(image_dirs, tmp_path):
    trainer = Trainer(parse_options(two_step_recipe(image_dirs, tmp_path), ["train.max_nan_skips=3",
                                                                             "logger.save_checkpoint_freq=2"]))
    step = trainer.train_step

    def poison_second_from_3(state):
        if trainer.it == 3:
            trainer.steps[1].losses[0].opt["real_scale"] = float("nan")
        return step(state)
    trainer.train_step = poison_second_from_3
    with pytest.raises(TrainingStopped, match=r"4 non-finite losses in a row in step `second` at iteration 6 "
                                              r"\(the first at 3\).*newest good checkpoint is \S*/2\.state"):
        trainer.fit()


def test_the_folder_lock_names_its_holder_and_goes_with_a_killed_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from utils.folder_lock import FolderLock; held = FolderLock(sys.argv[2]).acquire(); "
                               "print('locked', flush=True); time.sleep(600)", str(ROOT), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as refused:
            FolderLock(tmp_path, "results folder", "use another folder").acquire()
        message = str(refused.value)
        assert f"results folder {tmp_path} is in use by process {holder.pid} on {socket.gethostname()}" in message
        assert "folder_lock" in message and "use another folder" in message  # its command, how to go on
    finally:
        holder.kill()  # kill -9: the kernel releases its lock
        holder.wait()
    FolderLock(tmp_path).acquire().release()


def test_the_lock_does_not_need_fcntl(tmp_path):
    """Windows has no fcntl: the project must still start (filelock picks the platform's lock)."""
    code = ("import sys, warnings; sys.modules['fcntl'] = None; sys.path.insert(0, sys.argv[1]); "
            "warnings.simplefilter('ignore'); import train, test, trainer.trainer; "
            "from utils.folder_lock import FolderLock; FolderLock(sys.argv[2]).acquire().release(); print('ok')")
    run = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path)], capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr[-2000:]


# ---- a name is a path ---------------------------------------------------------------------------------
def recipe_without_roots(image_dirs, tmp_path):
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path)
    recipe["path"].pop("experiments_root")  # experiments/<name>/ under the working folder
    path = tmp_path / "recipes" / "r.yml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("name, problem", [
    ("../../x", "`..`"), ("/tmp/elsewhere", "absolute"), (".", "`.`"), ("''", "empty"), ("' '", "empty"),
    ("~", "required"), ("'~/runs'", "`~`"), ("a" * 300, "bytes long"), ("'a/../../b'", "`..`"), ("'a//b'", "empty part"),
    ("'run\\\\1'", "file systems refuse"), ("'C:run'", "drive"), ("'run.'", "ends with a dot"), ("null", "required")])
def test_a_name_that_is_not_a_plain_folder_name_is_refused_before_anything_is_written(
        image_dirs, tmp_path, monkeypatch, capsys, name, problem):
    import train
    recipe = recipe_without_roots(image_dirs, tmp_path)
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for extra in ([], ["--fresh"], ["--resume", "auto"]):
        assert train.main(["-opt", str(recipe), "--set", f"name={name}", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "`name`" in err[0] and problem in err[0], err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [recipe]


def test_a_name_with_folders_stays_under_experiments(image_dirs, tmp_path, monkeypatch):
    recipe = recipe_without_roots(image_dirs, tmp_path)
    monkeypatch.chdir(tmp_path)
    opt = parse_options(str(recipe), ["name=stage1/run_2", "train.niter=2"])
    assert opt["path"]["experiments_root"] == str(Path("experiments") / "stage1" / "run_2")
    Trainer(opt).fit()
    assert (tmp_path / "experiments" / "stage1" / "run_2" / "training_state" / "2.state").is_file()


@pytest.mark.parametrize("override, key", [
    ("datasets.val.name=../v", "datasets.val.name"), ("datasets.val.name=''", "datasets.val.name"),
    ("logger.visuals=[gen, ../../g]", "logger.visuals[1]"),
    ("networks={'../g': {which_model_G: RRDBNet}}", "networks.../g"),
    ("datasets={'a/b': {mode: fullimage}}", "datasets.a/b"),
    ("steps.generator.injectors={'x:y': {type: generator, generator: generator}}",
     "steps.generator.injectors.x:y")])
def test_every_value_that_becomes_a_file_name_is_checked(image_dirs, tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"`{re.escape(key)}`.*becomes a file or folder name"):
        parse_options(tiny_rrdb_recipe(image_dirs, tmp_path), [override])


def test_a_latents_file_whose_name_climbs_out_is_skipped(tmp_path):
    import torch
    from conftest import ROOT as root
    playground = runpy.run_path(str(root / "scripts" / "srflow_latent_space_playground.py"))
    path = tmp_path / "x_encode.pt"
    torch.save({"name": "../../escaped", "lq": torch.zeros(1, 3, 4, 4), "latents": [], "size": [16, 16]}, path)
    with pytest.raises(ValueError, match="image name `../../escaped` holds `/`"):
        playground["load_latents"](path, torch.device("cpu"))


# ---- values a schema lets through, and keys nobody reads ------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("steps.generator.injectors.gen_inj.out=hq",
     "`steps.generator.injectors.gen_inj.out` writes `hq`, which the dataset writes"),
    ("steps.generator.injectors.gen_inj.out=[lq_path]",
     "`steps.generator.injectors.gen_inj.out` writes `lq_path`, which the dataset writes"),
    ("logger.visuals=[gen, genn]", "`logger.visuals[1]` is `genn`, which neither the dataset nor an injector writes "
                                   "(did you mean `gen`?)"),
    ("eval.output_state=gen_out", "`eval.output_state` is `gen_out`, which no injector writes (did you mean `gen`?)"),
])
def test_state_keys_that_nothing_writes_or_that_overwrite_the_data_are_refused_before_training(
        image_dirs, tmp_path, capsys, override, message):
    import train
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump(tiny_rrdb_recipe(image_dirs, tmp_path / "run")))
    assert train.main(["-opt", str(path), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name not in LOCK_FILES]


# ---- failing cleanly ------------------------------------------------------------------------------------
@pytest.mark.parametrize("split, change, stop_at", [("train", "delete", 7), ("train", "shrink", 7),
                                                     ("val", "delete", 10)])
def test_data_that_changes_mid_run_stops_with_one_line_and_a_checkpoint(tmp_path, image_dirs, split, change, stop_at):
    import cv2
    data = {name: tmp_path / name for name in ("train", "val")}
    for name, folder in data.items():
        shutil.copytree(image_dirs[name], folder)
    recipe = tiny_rrdb_recipe({k: str(v) for k, v in data.items()}, tmp_path / "run", niter=20)
    trainer = Trainer(parse_options(recipe, ["logger.save_checkpoint_freq=5"]))
    step = trainer.train_step
    saved = {}

    def change_the_data(state):
        if trainer.it == 7:
            for f in data[split].glob("*.png"):
                saved[f] = f.read_bytes()
                if change == "delete":
                    f.unlink()
                else:
                    cv2.imwrite(str(f), np.zeros((8, 8, 3), np.uint8))  # smaller than a crop
        return step(state)
    trainer.train_step = change_the_data
    with pytest.raises(TrainingStopped) as stopped:
        trainer.fit()
    message = str(stopped.value)
    assert "\n" not in message and f"iteration {stop_at}: none of the" in message, message
    assert re.search(rf"images can be loaded any more \({re.escape(str(data[split]))}/\d\.png: ", message), message
    assert f"saved {tmp_path / 'run' / 'training_state' / f'{stop_at}.state'}" in message and "--resume auto" in message
    for f, content in saved.items():  # the data is back: the run goes on from there
        f.write_bytes(content)
    resumed = Trainer(parse_options(recipe, ["train.niter=12"]), resume="auto")
    assert resumed.it == stop_at
    resumed.fit()


@pytest.mark.parametrize("mistake", ["steps.generator.injectors.gen_inj.out=[gen, extra]",
                                     "steps.generator.injectors.gen_inj.in=[lq, lq, lq]",
                                     "steps.generator.losses.pix.criterion=l3"])
def test_a_start_that_fails_at_its_first_iteration_does_not_block_the_corrected_command(
        image_dirs, tmp_path, capsys, mistake):
    import train
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "run", niter=2)
    recipe["use_tb_logger"] = True
    recipe["logger"].update(visual_debug_rate=1, print_freq=1)
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump(recipe))
    try:
        code = train.main(["-opt", str(path), "--set", mistake])
    except Exception:  # not a recipe error the checks know: a traceback, but still nothing left behind
        code = None
    assert code != 0
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name not in LOCK_FILES], \
        sorted((tmp_path / "run").rglob("*"))
    capsys.readouterr()
    assert train.main(["-opt", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:skipping image")
@pytest.mark.parametrize("side", [1, 3])
def test_images_too_small_say_so_and_the_smallest_size_that_works(tmp_path, side):
    import cv2
    from data import build_dataset
    folder = tmp_path / "tiny"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((side, side, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"no usable images: each is unreadable or too small; the smallest size "
                                          r"that works is 8x8 \(HQ pixels, at scale 4 and force_multiple 2\)"):
        build_dataset({"mode": "fullimage", "dataroot_GT": str(folder), "scale": 4, "force_multiple": 2}, {}, "test")
    with pytest.raises(ConfigError, match=r"the smallest size that works is 32x32 \(HQ pixels: target_size\)"):
        build_dataset({"mode": "single_image_extensible", "paths": str(folder), "scale": 4, "target_size": 32},
                      {}, "train")


@pytest.mark.parametrize("content", [b"hello, this is not a tensor\n", b"", b"PK\x03\x04 truncated zip"])
def test_a_file_that_is_not_a_latents_file_says_so(tmp_path, content):
    import torch
    playground = runpy.run_path(str(ROOT / "scripts" / "srflow_latent_space_playground.py"))
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as refused:
        playground["load_latents"](path, torch.device("cpu"))
    assert str(refused.value).startswith("not a latents file written by `--mode encode` (it cannot be read as one:")
    assert "\n" not in str(refused.value)
