"""The generic trainer on a tiny RRDB: learning, checkpoints, resume, NaN safety, freezing."""
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import tiny_rrdb_recipe
from trainer import checkpoint
from trainer.trainer import Trainer
from utils.errors import TrainingInterrupted, TrainingStopped
from utils.options import parse_options


def make_trainer(image_dirs, root, overrides=(), resume=None, **train):
    return Trainer(parse_options(tiny_rrdb_recipe(image_dirs, root, **train), list(overrides)), resume=resume)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.networks["generator"].state_dict().items()}


def test_loss_goes_down_and_validation_psnr_closes_in_on_bicubic(image_dirs, tmp_path):
    trainer = make_trainer(image_dirs, tmp_path, ["train.niter=60", "train.val_freq=30", "logger.print_freq=1"])
    trainer.validate()  # nothing learned yet: recorded at iteration 0
    losses = []
    original = trainer.train_step
    trainer.train_step = lambda state: losses.append(original(state)["generator/pix"]) or {}
    history = trainer.fit()
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert [h["iter"] for h in history] == [0, 30, 60]
    # 60 iterations of a tiny RRDB do not reach bicubic yet (about -12 dB), but must have learned something:
    # a higher PSNR than the untrained network, and a gap to bicubic that shrinks between validations.
    gap = [h["val/psnr_bicubic"] - h["val/psnr"] for h in history]
    assert history[-1]["val/psnr"] > history[0]["val/psnr"] + 1
    assert gap[0] > gap[1] > gap[2] > 0
    assert {"val/psnr", "val/ssim", "val/psnr_bicubic", "val/ssim_bicubic"} <= set(history[-1])
    assert (tmp_path / "models" / "60_generator.pth").is_file()
    assert (tmp_path / "training_state" / "60.state").is_file()
    assert any((tmp_path / "visual_dbg").rglob("*.png"))


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(image_dirs, tmp_path):
    full = make_trainer(image_dirs, tmp_path / "full", ["train.niter=20"])
    full.fit()
    first = make_trainer(image_dirs, tmp_path / "split", ["train.niter=10"])
    first.fit()
    second = make_trainer(image_dirs, tmp_path / "split", ["train.niter=20"], resume="auto")
    assert second.it == 10
    second.fit()
    for key, value in weights(full).items():
        assert torch.equal(value, weights(second)[key]), key


def test_gradient_accumulation_matches_the_full_batch(image_dirs, tmp_path):
    a = make_trainer(image_dirs, tmp_path / "a", ["train.niter=3", "train.val_freq=100"])
    b = make_trainer(image_dirs, tmp_path / "b", ["train.niter=3", "train.val_freq=100", "train.mega_batch_factor=2"])
    a.fit()
    b.fit()
    for key, value in weights(a).items():
        torch.testing.assert_close(value, weights(b)[key], rtol=1e-4, atol=1e-5)


def test_interrupted_save_leaves_the_previous_checkpoint_intact(image_dirs, tmp_path, monkeypatch):
    trainer = make_trainer(image_dirs, tmp_path, ["train.niter=10"])
    trainer.fit()
    good = checkpoint.find_resume_state(tmp_path / "training_state")
    assert good.name == "10.state"
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    trainer.it = 20
    with pytest.raises(TrainingStopped, match=r"disk full; the newest good checkpoint is .*10\.state"):
        trainer.save()
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint.find_resume_state(tmp_path / "training_state") == good
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    # A state file whose weights went missing is not "complete": resume falls back to an older one.
    orphan = checkpoint.load_file(good)
    orphan["model_files"] = {"generator": "20_generator.pth"}
    torch.save(orphan, tmp_path / "training_state" / "20.state")
    assert checkpoint.find_resume_state(tmp_path / "training_state") == good


def test_non_finite_losses_skip_the_step_and_then_stop(image_dirs, tmp_path):
    trainer = make_trainer(image_dirs, tmp_path, ["train.max_nan_skips=3"])
    trainer.steps[0].losses[0].opt["real_scale"] = float("nan")  # a recipe cannot say nan: poison it here
    before = weights(trainer)
    with pytest.raises(TrainingStopped, match="4 non-finite losses in a row .*no checkpoint of this run"):
        trainer.fit()
    for key, value in before.items():
        assert torch.equal(value, weights(trainer)[key]), key
    assert not (tmp_path / "training_state").exists() or not list((tmp_path / "training_state").glob("*.state"))


def test_pretrained_weights_load_and_lr_schedule(image_dirs, tmp_path):
    source = make_trainer(image_dirs, tmp_path / "src", ["train.niter=10"])
    source.fit()
    loaded = make_trainer(image_dirs, tmp_path / "dst",
                          [f"path.pretrain_model_generator={tmp_path / 'src' / 'models' / '10_generator.pth'}",
                           "train.warmup_iter=4"])
    for key, value in weights(source).items():
        assert torch.equal(value, weights(loaded)[key])
    assert loaded.lr_schedule(2, 1.0) == pytest.approx(0.5)
    assert loaded.lr_schedule(16, 1.0) == pytest.approx(0.5)  # past gen_lr_steps [15]
    assert loaded.lr_schedule(10, 1.0) == pytest.approx(1.0)


def test_ema_weights_are_saved(image_dirs, tmp_path):
    trainer = make_trainer(image_dirs, tmp_path, ["train.niter=10", "train.ema_decay=0.9"])
    trainer.fit()
    ema = torch.load(tmp_path / "models" / "10_generator_ema.pth", weights_only=True)
    live = weights(trainer)
    assert set(ema) == set(live)
    assert any(not torch.equal(ema[k], live[k]) for k in live)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_save_a_checkpoint_then_stop(image_dirs, tmp_path, signum):
    trainer = make_trainer(image_dirs, tmp_path, ["train.niter=50", "logger.save_checkpoint_freq=100"])
    original = trainer.train_step

    def step_then_signal(state):
        logs = original(state)
        if trainer.it == 5:
            os.kill(os.getpid(), signum)
        return logs

    trainer.train_step = step_then_signal
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match="at iteration 5: saved .*5.state; continue with --resume auto") as e:
        trainer.fit()
    assert e.value.signum == signum
    assert signal.getsignal(signum) == before  # the handler the run found is back
    assert checkpoint.find_resume_state(tmp_path / "training_state").name == "5.state"
    resumed = make_trainer(image_dirs, tmp_path, ["train.niter=50"], resume="auto")
    assert resumed.it == 5


def test_resuming_with_a_changed_recipe_applies_and_logs_the_changes(image_dirs, tmp_path):
    make_trainer(image_dirs, tmp_path, ["train.niter=10"]).fit()
    trainer = make_trainer(image_dirs, tmp_path, ["train.niter=20", "steps.generator.optimizer_params.lr=1e-4",
                                                  "steps.generator.optimizer_params.beta1=0.5"], resume="auto")
    trainer.close()
    log = max((tmp_path / "log").glob("*.log"), key=os.path.getmtime).read_text()
    assert "steps.generator.optimizer_params.lr: 0.002 -> 0.0001 (applied)" in log
    assert "train.niter: 10 -> 20 (applied)" in log
    group = trainer.steps[0].optimizer.param_groups[0]
    assert group["initial_lr"] == 1e-4 and group["betas"] == (0.5, 0.99)
    assert trainer.steps[0].optimizer.state[group["params"][0]]["step"] == 10  # Adam's moments kept
