"""torchrun with 2 CPU processes (gloo) trains exactly what one process does on the same global batch."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, tiny_rrdb_recipe, tiny_srflow_recipe
from trainer.trainer import Trainer
from utils.options import parse_options

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


def torchrun(recipe_path, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), "-opt",
                          str(recipe_path), "--launcher", "pytorch", *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def final_weights(root, it):
    return torch.load(root / "models" / f"{it}_generator.pth", weights_only=True)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_two_processes_match_one_process_on_the_global_batch_and_resume(image_dirs, tmp_path):
    def recipe(root, batch, niter):
        r = tiny_rrdb_recipe(image_dirs, root, niter=niter, val_freq=100)
        r["datasets"]["train"]["batch_size"] = batch
        r["logger"]["save_checkpoint_freq"] = 2
        return r

    path = tmp_path / "ddp.yml"
    path.write_text(yaml.safe_dump(recipe(tmp_path / "ddp", 2, 4)))
    torchrun(path)
    single = Trainer(parse_options(recipe(tmp_path / "single", 4, 4)))
    single.fit()
    ddp = final_weights(tmp_path / "ddp", 4)
    for key, value in single.networks["generator"].state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)

    # Stopped after 2 iterations, then resumed by a new 2-process run: the same weights as straight through.
    path.write_text(yaml.safe_dump(recipe(tmp_path / "resumed", 2, 2)))
    torchrun(path)
    path.write_text(yaml.safe_dump(recipe(tmp_path / "resumed", 2, 4)))
    run = torchrun(path, "--resume", "auto")
    assert "resumed from" in run.stdout + run.stderr
    resumed = final_weights(tmp_path / "resumed", 4)
    for key, value in ddp.items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_two_processes_train_srflow_frozen_then_joint(image_dirs, tmp_path):
    """Stage 2 with the RRDB frozen, unfrozen after the first iteration (DDP re-wrapped): still the
    single-process weights."""
    def recipe(root, batch):
        r = tiny_srflow_recipe(image_dirs, tmp_path / root, niter=4, val_freq=100)
        r["networks"]["generator"]["train_RRDB_delay"] = 0.25  # frozen for int(0.25 * 4) = 1 iteration
        r["networks"]["generator"]["flow"]["augmentation"] = {"noiseQuant": False}  # no per-process noise draws
        # Adam's first steps move a weight by about lr whatever the size of its gradient: near-zero
        # gradients would turn float round-off into differences of lr. A larger eps damps those.
        r["steps"]["generator"]["optimizer_params"]["eps"] = 1e-4
        r["datasets"]["train"]["batch_size"] = batch
        return r

    path = tmp_path / "ddp_srflow.yml"
    path.write_text(yaml.safe_dump(recipe("ddp", 2)))
    run = torchrun(path)
    assert "train_RRDB_delay" in run.stdout + run.stderr  # the unfreezing happened, and was logged
    single = Trainer(parse_options(recipe("single", 4)))
    single.fit()
    ddp = final_weights(tmp_path / "ddp", 4)
    initial = Trainer(parse_options(recipe("fresh", 4))).networks["generator"].state_dict()
    assert not torch.equal(ddp["RRDB.conv_first.weight"], initial["RRDB.conv_first.weight"])  # it trained
    # Round-off differs between two half batches and one whole one, and oneDNN's kernels differ between CPUs:
    # up to 2e-5 measured, against Adam moving a weight by up to lr = 1e-3 per step. A process that trained
    # on its own would differ by the order of lr.
    for key, value in single.networks["generator"].state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=5e-5, msg=key)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_sigterm_under_torchrun_saves_once_for_all_processes(image_dirs, tmp_path):
    import signal
    import time
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "run", niter=100000, val_freq=100000)
    recipe["datasets"]["train"]["batch_size"] = 2
    recipe["logger"].update(save_checkpoint_freq=100000, print_freq=1)
    path = tmp_path / "ddp.yml"
    path.write_text(yaml.safe_dump(recipe))
    run = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), "-opt", str(path),
                            "--launcher", "pytorch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while "iter " not in "".join(p.read_text() for p in (tmp_path / "run" / "log").glob("*.log")):
        assert run.poll() is None and time.time() < deadline, run.communicate()
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)  # torchrun passes it on to every process
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0
    assert "stopped: SIGTERM at iteration" in err
    states = list((tmp_path / "run" / "training_state").glob("*.state"))
    assert len(states) == 1  # the processes agreed on one iteration
    stopped_at = int(states[0].stem)
    recipe["train"]["niter"] = stopped_at + 1
    resumed = Trainer(parse_options(recipe), resume="auto")
    assert resumed.it == stopped_at
    resumed.fit()
