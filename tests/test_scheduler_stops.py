"""Stopping a run the way schedulers do: SLURM's scancel, `timeout` and `systemctl stop` signal every process
of the job, DataLoader workers included. The run saves exactly as for a signal to its main process alone."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_rrdb_recipe
from trainer import checkpoint, stop_signals
from trainer.stop_signals import StopSignals
from trainer.trainer import Trainer
from utils.errors import TrainingInterrupted
from utils.options import parse_options

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def worker_recipe(image_dirs, tmp_path, batch_size=4):
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "run", niter=100000, val_freq=100000)
    recipe["datasets"]["train"].update(n_workers=2, batch_size=batch_size)
    recipe["logger"].update(save_checkpoint_freq=100000, print_freq=1)
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump(recipe))
    return recipe, path


def wait_until_training(root: Path, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not ((root / "log").is_dir() and "iter " in "".join(p.read_text() for p in (root / "log").glob("*.log"))):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def process_tree(pid: int) -> list:
    """`pid` and every process below it (from /proc), parents first."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop(0))
        todo += children.get(tree[-1], [])
    return tree


def resume_continues(recipe, root):
    state = checkpoint.find_resume_state(root / "training_state")
    stopped_at = int(state.stem)
    recipe["train"]["niter"] = stopped_at + 2
    recipe["datasets"]["train"]["n_workers"] = 0
    resumed = Trainer(parse_options(recipe), resume="auto")
    assert resumed.it == stopped_at
    resumed.fit()
    assert (root / "training_state" / f"{stopped_at + 2}.state").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow),
                                    pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_a_signal_to_the_process_group_with_workers_saves_and_resumes(image_dirs, tmp_path, signum):
    recipe, path = worker_recipe(image_dirs, tmp_path)
    run = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-opt", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV, start_new_session=True)
    wait_until_training(tmp_path / "run", run)
    assert len(process_tree(run.pid)) == 3  # the main process and its two workers
    os.killpg(run.pid, signum)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("stopped:")]
    name = signal.Signals(signum).name
    assert len(lines) == 1 and lines[0].startswith(f"stopped: {name} at iteration") and "saved" in lines[0], err
    assert err.strip().splitlines()[-1] == lines[0]
    resume_continues(recipe, tmp_path / "run")


def test_a_loader_that_fails_with_the_stop_signal_ends_the_loop_before_the_iteration():
    def dead_workers():
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
        yield

    stops = StopSignals()
    with pytest.raises(RuntimeError):  # no signal: a real failure, not hidden
        Trainer._next_batch(dead_workers(), stops)
    stops.received = signal.SIGTERM
    assert Trainer._next_batch(dead_workers(), stops) is None


def test_a_repeated_sigterm_is_the_same_stop_but_a_second_signal_stops_at_once(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(stop_signals.time, "monotonic", lambda: now[0])
    stops = StopSignals()
    stops._handle(signal.SIGTERM, None)
    now[0] += 1
    stops._handle(signal.SIGTERM, None)  # the job's processes all signalled, and torchrun passing it on
    assert stops.received == signal.SIGTERM
    with pytest.raises(TrainingInterrupted, match="second SIGINT"):
        stops._handle(signal.SIGINT, None)
    now[0] += stop_signals.REPEAT_WINDOW_S
    with pytest.raises(TrainingInterrupted, match="second SIGTERM"):
        stops._handle(signal.SIGTERM, None)
    ctrl_c = StopSignals()
    ctrl_c._handle(signal.SIGINT, None)
    with pytest.raises(TrainingInterrupted, match="second SIGINT"):  # Ctrl-C twice: stop now
        ctrl_c._handle(signal.SIGINT, None)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
@pytest.mark.parametrize("how", [pytest.param("group", marks=pytest.mark.slow), "every process"])
def test_sigterm_to_a_torchrun_job_with_workers_saves_once(image_dirs, tmp_path, how):
    """`group`: torchrun's process group (torchrun passes it on to each process and its workers);
    `every process`: as systemctl stop and SLURM do, torchrun, its processes and their workers all at once."""
    recipe, path = worker_recipe(image_dirs, tmp_path, batch_size=2)
    run = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), "-opt",
                            str(path), "--launcher", "pytorch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=ENV, start_new_session=True)
    wait_until_training(tmp_path / "run", run)
    if how == "group":
        os.killpg(run.pid, signal.SIGTERM)
    else:
        for pid in process_tree(run.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    _, err = run.communicate(timeout=120)
    assert "stopped: SIGTERM at iteration" in err and "second SIGTERM" not in err, err[-3000:]
    assert "killed by signal" not in err and "exited unexpectedly" not in err, err[-3000:]
    states = list((tmp_path / "run" / "training_state").glob("*.state"))
    assert len(states) == 1  # the processes agreed on one iteration
    resume_continues(recipe, tmp_path / "run")


def test_a_process_that_exits_with_its_workers_still_running_ends_them(image_dirs, tmp_path):
    """Workers ignore stop signals, yet the SIGTERM the main process sends its workers as it exits ends them
    (else Python's exit would wait for them forever)."""
    recipe, _ = worker_recipe(image_dirs, tmp_path)
    code = ("import sys, yaml; sys.path.insert(0, sys.argv[1]); from trainer.trainer import Trainer; "
            "from utils.options import parse_options; "
            "trainer = Trainer(parse_options(yaml.safe_load(open(sys.argv[2])))); next(trainer.batches()); "
            "print('fetched', flush=True)")  # the trainer, its loader and workers are alive at exit
    run = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "r.yml")], capture_output=True,
                         text=True, env=ENV, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "fetched", run.stderr[-2000:]
