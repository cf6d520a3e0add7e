"""What users actually do to a run never loses work: re-running it, stopping it with a signal, starting two
into one folder, resuming from an older checkpoint, a changed recipe, a full disk, non-finite weights."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import ROOT, tiny_rrdb_recipe
from trainer import checkpoint
from trainer.run_folder import FolderLock
from trainer.trainer import Trainer
from utils.errors import ConfigError, TrainingStopped
from utils.folder_lock import LOCK_FILES
from utils.options import parse_options


def recipe_file(image_dirs, root, path, **train):
    recipe = tiny_rrdb_recipe(image_dirs, root, **train)
    path.write_text(yaml.safe_dump(recipe))
    return path


class Finished:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def train_cli(capsys):
    """train.py's main() in this process: its exit status and what it printed on stderr."""
    import train

    def run(*args):
        capsys.readouterr()
        code = train.main([str(a) for a in args])
        return Finished(code, capsys.readouterr().err)
    return run


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name not in LOCK_FILES}


def make(image_dirs, root, overrides=(), **kwargs):
    return Trainer(parse_options(tiny_rrdb_recipe(image_dirs, root), list(overrides)), **kwargs)


def test_rerun_without_resume_is_refused_and_touches_nothing(image_dirs, tmp_path, train_cli):
    recipe = recipe_file(image_dirs, tmp_path / "run", tmp_path / "r.yml", niter=10)
    assert train_cli("-opt", recipe, "--set", "logger.keep_checkpoints=1").returncode == 0
    before = snapshot(tmp_path / "run")
    again = train_cli("-opt", recipe, "--set", "logger.keep_checkpoints=1")
    assert again.returncode == 2
    message = again.stderr.strip().splitlines()
    assert len(message) == 1 and "holds an earlier run" in message[0] and "--resume auto" in message[0], again.stderr
    assert "Traceback" not in again.stderr
    assert snapshot(tmp_path / "run") == before

    fresh = train_cli("-opt", recipe, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("run_archived_")]
    assert len(archived) == 1 and snapshot(archived[0]) == before
    assert (tmp_path / "run" / "training_state" / "10.state").is_file()
    log = "".join(f.read_text() for f in (tmp_path / "run" / "log").glob("*.log"))
    assert f"(--fresh) were moved to {archived[0]}" in log


def test_a_run_that_fails_to_start_leaves_nothing_that_blocks_the_next(image_dirs, tmp_path):
    with pytest.raises(ConfigError, match="datasets.train"):
        make(image_dirs, tmp_path, ["datasets.train=null"])
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in LOCK_FILES]
    make(image_dirs, tmp_path).fit()


def test_keep_checkpoints_prunes_only_what_the_run_wrote(image_dirs, tmp_path):
    make(image_dirs, tmp_path, ["train.niter=10", "logger.save_checkpoint_freq=5"]).fit()
    # A copy the user keeps, named like a checkpoint: no run of this folder wrote it.
    (tmp_path / "models" / "3_generator.pth").write_bytes((tmp_path / "models" / "5_generator.pth").read_bytes())
    make(image_dirs, tmp_path, ["train.niter=20", "logger.save_checkpoint_freq=5", "logger.keep_checkpoints=1"],
         resume="auto").fit()
    assert sorted(p.name for p in (tmp_path / "training_state").glob("*.state")) == ["20.state"]
    assert sorted(p.name for p in (tmp_path / "models").glob("*.pth")) == ["20_generator.pth", "3_generator.pth"]


def wait_for(predicate, process, seconds=120):
    deadline = time.time() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def long_run(image_dirs, tmp_path, *args):
    recipe = recipe_file(image_dirs, tmp_path / "run", tmp_path / "r.yml", niter=100000)
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-opt", str(recipe), "--set",
                             "logger.save_checkpoint_freq=100000", "--set", "train.val_freq=100000", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def training_started(root):
    return lambda: any((root / "log").glob("*.log")) and "iter " in "".join(
        p.read_text() for p in (root / "log").glob("*.log"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_saves_and_resume_auto_continues(image_dirs, tmp_path, signum):
    run = long_run(image_dirs, tmp_path, "--set", "logger.print_freq=1")
    wait_for(training_started(tmp_path / "run"), run)
    run.send_signal(signum)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signum
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"stopped: {signal.Signals(signum).name} at iteration") and "--resume auto" in line
    state = checkpoint.find_resume_state(tmp_path / "run" / "training_state")
    stopped_at = int(state.stem)
    assert stopped_at >= 1
    resumed = make(image_dirs, tmp_path / "run", [f"train.niter={stopped_at + 2}"], resume="auto")
    assert resumed.it == stopped_at
    resumed.fit()
    assert (tmp_path / "run" / "training_state" / f"{stopped_at + 2}.state").is_file()


def test_two_runs_into_one_folder(image_dirs, tmp_path, train_cli):
    first = long_run(image_dirs, tmp_path)
    wait_for(training_started(tmp_path / "run"), first)
    second = train_cli("-opt", tmp_path / "r.yml", "--resume", "auto")
    assert second.returncode == 2
    assert f"in use by process {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    first.kill()  # kill -9: its lock goes with it
    first.communicate()
    FolderLock(tmp_path / "run").acquire().release()


def test_resuming_an_older_checkpoint_moves_the_newer_ones_aside(image_dirs, tmp_path):
    make(image_dirs, tmp_path, ["train.niter=20", "logger.save_checkpoint_freq=5"]).fit()
    newer = {name: (tmp_path / name).read_bytes() for name in
             ("models/15_generator.pth", "models/20_generator.pth", "training_state/15.state", "training_state/20.state")}
    older = tmp_path / "training_state" / "10.state"
    resumed = make(image_dirs, tmp_path, ["train.niter=20", "logger.save_checkpoint_freq=5"], resume=str(older))
    resumed.fit()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("superseded_")]
    assert len(aside) == 1
    for name, data in newer.items():
        assert (aside[0] / name).read_bytes() == data
    assert (tmp_path / "training_state" / "20.state").is_file()  # written again by the resumed run


def test_a_changed_network_shape_is_refused_on_resume(image_dirs, tmp_path):
    make(image_dirs, tmp_path, ["train.niter=5"]).fit()
    with pytest.raises(ConfigError, match=r"`networks.generator.nf` \(8 -> 16\)"):
        make(image_dirs, tmp_path, ["train.niter=10", "networks.generator.nf=16"], resume="auto")
    make(image_dirs, tmp_path, ["train.niter=10"], resume="auto")  # the refused run released the folder


def test_a_changed_learning_rate_takes_effect_on_resume(image_dirs, tmp_path):
    make(image_dirs, tmp_path, ["train.niter=10"]).fit()
    resumed = make(image_dirs, tmp_path, ["train.niter=12", "steps.generator.optimizer_params.lr=0.01",
                                          "steps.generator.optimizer_params.weight_decay=0.1", "train.ema_decay=0.5"],
                   resume="auto")
    groups = []
    step = resumed.train_step
    resumed.train_step = lambda state: (step(state), groups.append(dict(resumed.steps[0].optimizer.param_groups[0])))[0]
    resumed.fit()
    assert [g["lr"] for g in groups] == [pytest.approx(0.01)] * 2  # gen_lr_steps [15] not reached yet
    assert all(g["weight_decay"] == 0.1 for g in groups)
    assert resumed.emas["generator"].decay == 0.5


def test_no_checkpoint_with_non_finite_weights(image_dirs, tmp_path):
    trainer = make(image_dirs, tmp_path, ["train.niter=5"])
    trainer.fit()
    with torch.no_grad():
        next(trainer.networks["generator"].parameters())[0].fill_(float("inf"))
    trainer.it = 6
    with pytest.raises(TrainingStopped, match=r"`weights.generator.conv_first.weight` holds inf or NaN.*5\.state"):
        trainer.save()
    assert not (tmp_path / "training_state" / "6.state").exists() and not (tmp_path / "models" / "6_generator.pth").exists()


def test_non_finite_stop_names_the_checkpoint_before_the_first_bad_loss(image_dirs, tmp_path):
    trainer = make(image_dirs, tmp_path, ["train.niter=40", "logger.save_checkpoint_freq=5", "train.max_nan_skips=6"])
    loss = trainer.steps[0].losses[0]
    step = trainer.train_step

    def poison_from_8(state):
        if trainer.it == 8:
            loss.opt["real_scale"] = float("nan")
        return step(state)
    trainer.train_step = poison_from_8
    with pytest.raises(TrainingStopped, match=r"the first at 8\).*newest good checkpoint is \S*/5\.state"):
        trainer.fit()
    assert (tmp_path / "training_state" / "10.state").is_file()  # skipped steps kept the weights finite


def test_a_failing_validation_comes_after_the_checkpoint_and_runs_again_on_resume(image_dirs, tmp_path):
    trainer = make(image_dirs, tmp_path, ["train.niter=20"])
    evaluator = trainer.evaluators[0]
    evaluate = evaluator.evaluate

    def fails_at_10(it, logger):
        if it == 10:
            raise RuntimeError("out of memory in validation")
        return evaluate(it, logger)
    evaluator.evaluate = fails_at_10
    with pytest.raises(RuntimeError):
        trainer.fit()
    assert checkpoint.find_resume_state(tmp_path / "training_state").name == "10.state"
    history = make(image_dirs, tmp_path, ["train.niter=20"], resume="auto").fit()
    assert [h["iter"] for h in history] == [10, 20]
    straight = make(image_dirs, tmp_path / "straight", ["train.niter=20"])
    assert [h["val/psnr"] for h in straight.fit()] == [h["val/psnr"] for h in history]


def test_resume_file_errors_are_one_line(image_dirs, tmp_path, train_cli):
    recipe = recipe_file(image_dirs, tmp_path / "run", tmp_path / "r.yml", niter=5)
    assert train_cli("-opt", recipe).returncode == 0
    weights = tmp_path / "run" / "models" / "5_generator.pth"
    cases = {str(weights): "is a weights file; --resume takes a training state",
             str(tmp_path / "run" / "training_state"): "is a folder",
             str(tmp_path / "nothing.state"): "does not exist"}
    for value, expected in cases.items():
        run = train_cli("-opt", recipe, "--resume", value)
        assert run.returncode == 2 and expected in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    weights.rename(tmp_path / "elsewhere.pth")
    run = train_cli("-opt", recipe, "--resume", tmp_path / "run" / "training_state" / "5.state")
    assert run.returncode == 2 and f"needs the weights of `generator` at {weights}" in run.stderr, run.stderr


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from utils.files import atomic_write_bytes
    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "result.bin", b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "result.bin").stat().st_mode & 0o777 == 0o644


def test_resume_auto_without_a_checkpoint_moves_what_the_stopped_run_left_aside(image_dirs, tmp_path):
    """A run stopped before its first checkpoint: `--resume auto` (e.g. a requeued job) starts afresh and
    keeps the files that run left."""
    (tmp_path / "log").mkdir(parents=True)
    (tmp_path / "log" / "train_1.log").write_text("an earlier attempt")
    make(image_dirs, tmp_path, ["train.niter=2"], resume="auto").fit()
    aside = [p for p in tmp_path.parent.iterdir() if p.name.startswith(f"{tmp_path.name}_archived_")]
    assert len(aside) == 1 and (aside[0] / "log" / "train_1.log").read_text() == "an earlier attempt"
    assert (tmp_path / "training_state" / "2.state").is_file()
