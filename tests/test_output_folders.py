"""Nothing the user owns is ever overwritten, by test.py or the playground: their output folder is locked while
they run, a file they did not write is never written over, their own earlier results only when told
(--overwrite), and two inputs that would give one result name are refused with a clear line."""
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import ROOT, run_test_py, save_random_weights, smooth_image, tiny_test_srflow_recipe
from utils.folder_lock import LOCK_FILES

PLAYGROUND = ROOT / "scripts" / "srflow_latent_space_playground.py"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two HQ images and a test recipe of a tiny random SRFlow (heat 0 only: one result per image)."""
    root = tmp_path_factory.mktemp("outputs")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        cv2.imwrite(str(images / f"{name}.png"), smooth_image(rng, 64, 64))
    recipe = tiny_test_srflow_recipe(str(images), root)
    recipe["path"]["pretrain_model_generator"] = save_random_weights(recipe, root / "weights.pth")
    recipe["test"] = {"heats": [0.0]}
    return root, images, recipe


def write_recipe(recipe, results: Path, path: Path, images: Path = None) -> Path:
    recipe = {**recipe, "path": {**recipe["path"], "results_root": str(results)}}
    if images is not None:
        recipe["datasets"] = {"test": {**recipe["datasets"]["test"], "dataroot_GT": str(images)}}
    path.write_text(yaml.safe_dump(recipe))
    return path


def files(folder: Path) -> dict:
    """The folder's files, but for its lock's (which says who holds it, and when)."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name not in LOCK_FILES}


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_test_py_never_writes_over_the_users_files(setup, tmp_path, capsys, overwrite):
    root, images, recipe = setup
    users = tmp_path / "results" / "set"  # the set's result folder already holds the user's own pictures
    users.mkdir(parents=True)
    for name in ("a_t0_s0.png", "b_t0_s0.png", "notes.txt"):  # named as test.py names its results
        (users / name).write_bytes(b"the user's " + name.encode())
    before = files(users)
    path = write_recipe(recipe, tmp_path / "results", tmp_path / "r.yml")
    assert run_test_py("-opt", str(path), *overwrite) == 2
    line = one_error(capsys)
    assert "a_t0_s0.png (and 1 more) exists and was not written by test.py: nothing was written over" in line
    assert "--set path.results_root=DIR" in line and "--output" in line
    assert files(users) == before


def test_test_py_keeps_and_redoes_its_own_results(setup, tmp_path, capsys):
    root, images, recipe = setup
    path = write_recipe(recipe, tmp_path / "results", tmp_path / "r.yml")
    assert run_test_py("-opt", str(path)) == 0
    first = files(tmp_path / "results" / "set")
    assert run_test_py("-opt", str(path)) == 0  # the same settings: kept
    assert run_test_py("-opt", str(path), "--overwrite") == 0  # redone
    again = files(tmp_path / "results" / "set")
    assert {k: v for k, v in again.items() if k.suffix == ".png"} == {k: v for k, v in first.items() if k.suffix == ".png"}
    # Another recipe's results in the same folder: the files test.py wrote there are its own.
    write_recipe({**recipe, "test": {"heats": [0.0, 0.5]}}, tmp_path / "results", path)
    capsys.readouterr()
    assert run_test_py("-opt", str(path)) == 2
    assert "other settings" in one_error(capsys)
    assert run_test_py("-opt", str(path), "--overwrite") == 0


def hold_lock(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from utils.folder_lock import FolderLock; held = FolderLock(sys.argv[2]).acquire(); "
                               "print('locked', flush=True); time.sleep(600)", str(ROOT), str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_command_into_a_locked_folder_is_refused(setup, tmp_path, capsys):
    root, images, recipe = setup
    path = write_recipe(recipe, tmp_path / "results", tmp_path / "r.yml")
    holder = hold_lock(tmp_path / "results" / "set")
    try:
        assert run_test_py("-opt", str(path)) == 2
        assert f"results folder {tmp_path / 'results' / 'set'} is in use by process {holder.pid}" in one_error(capsys)
        play = runpy.run_path(str(PLAYGROUND))["main"]
        assert play(["-opt", str(path), "--input", str(images / "a.png"), "--output", str(tmp_path / "results" / "set"),
                     "--steps", "2", "--device", "cpu"]) == 2
        assert f"is in use by process {holder.pid}" in one_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert not list((tmp_path / "results" / "set").glob("*.png"))
    assert run_test_py("-opt", str(path)) == 0


@pytest.mark.parametrize("second", ["a.jpg", "A.png"])
def test_test_py_refuses_two_inputs_that_give_one_result_name(setup, tmp_path, capsys, second):
    root, images, recipe = setup
    mine = tmp_path / "images"
    shutil.copytree(images, mine)
    cv2.imwrite(str(mine / second), cv2.imread(str(images / "b.png")))
    if (mine / second).samefile(mine / "a.png"):
        pytest.skip("a case-insensitive file system: the two names are one file")
    path = write_recipe(recipe, tmp_path / "results", tmp_path / "r.yml", images=mine)
    assert run_test_py("-opt", str(path)) == 2
    line = one_error(capsys)
    assert "`datasets.test`" in line and "a.png" in line and second in line and "would both give" in line
    assert not [p for p in (tmp_path / "results").rglob("*.png")]


@pytest.fixture
def play(setup, tmp_path):
    root, images, recipe = setup
    path = write_recipe(recipe, tmp_path / "unused", tmp_path / "r.yml")
    main = runpy.run_path(str(PLAYGROUND))["main"]

    def run(*args, input=str(images / "*.png"), output=tmp_path / "out"):
        return main(["-opt", str(path), "--input", input, "--output", str(output), "--steps", "2", "--device", "cpu",
                     "--temperature", "0.5", *args])
    return run


def test_the_playground_never_writes_over_the_users_file(play, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_temperature_t0.5.png").write_bytes(b"the user's picture")
    for extra in ([], ["--overwrite"]):
        assert play(*extra) == 2
        line = one_error(capsys)
        assert "a_temperature_t0.5.png exists and was not written by the playground" in line
        assert "another --output" in line
    assert (out / "a_temperature_t0.5.png").read_bytes() == b"the user's picture"
    assert sorted(p.name for p in out.glob("*.png")) == ["a_temperature_t0.5.png"]


def test_the_playground_replaces_its_own_results_only_with_overwrite(play, tmp_path, capsys):
    assert play() == 0
    before = files(tmp_path / "out")
    capsys.readouterr()
    assert play() == 2
    line = one_error(capsys)
    assert "holds an earlier result of the playground: add --overwrite" in line
    assert files(tmp_path / "out") == before
    assert play("--overwrite") == 0


def test_the_playground_refuses_inputs_and_references_that_share_a_name(play, setup, tmp_path, capsys):
    root, images, recipe = setup
    mine = tmp_path / "images"
    shutil.copytree(images, mine)
    cv2.imwrite(str(mine / "a.jpg"), cv2.imread(str(images / "b.png")))
    assert play(input=str(mine / "*")) == 2
    line = one_error(capsys)
    assert "a.jpg" in line and "a.png" in line and "both name their results `a_...`" in line
    assert play("--mode", "latent_transfer", "--reference", str(mine / "*"), input=str(images / "b.png")) == 2
    assert "is named `a` like another reference" in one_error(capsys)
    assert not list((tmp_path / "out").glob("*.png"))
