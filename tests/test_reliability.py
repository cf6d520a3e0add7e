"""Reliability: non-finite losses counted per step, a portable folder lock, names that are paths, values a
schema lets through, and failing cleanly (a failed start, data that changes mid-run, images too small)."""
import copy
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_rrdb_recipe
from trainer.trainer import Trainer
from utils.errors import ConfigError, TrainingStopped
from utils.folder_lock import FolderLock
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
