"""Learning-rate schedules: DLAS's and the official SRFlow options, and where each one ends."""
import math

import pytest

from conftest import tiny_rrdb_recipe
from trainer.schedulers import build_lr_schedule
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.options import parse_options


def schedule(image_dirs, tmp_path, **train):
    opt = parse_options(tiny_rrdb_recipe(image_dirs, tmp_path, **train))
    return build_lr_schedule(opt["train"])


def test_lr_steps_rel_halves_the_lr_at_its_fractions_of_niter(image_dirs, tmp_path):
    lr = schedule(image_dirs, tmp_path, niter=200, lr_steps_rel=[0.5, 0.75, 0.9, 0.95], lr_gamma=0.5)
    # As the official SRFlow options: milestones int(fraction * niter), replacing gen_lr_steps ([15] here).
    assert [lr(it, 1.0) for it in (15, 99, 100, 149, 150, 180, 190, 200)] == [1, 1, .5, .5, .25, .125, .0625, .0625]


def test_lr_steps_rel_in_a_real_run(image_dirs, tmp_path):
    trainer = Trainer(parse_options(tiny_rrdb_recipe(image_dirs, tmp_path, niter=8, val_freq=100,
                                                     lr_steps_rel=[0.5])))
    lrs = []
    step = trainer.train_step
    trainer.train_step = lambda state: (step(state), lrs.append(trainer.steps[0].optimizer.param_groups[0]["lr"]))[0]
    trainer.fit()
    assert lrs == [pytest.approx(2e-3)] * 3 + [pytest.approx(1e-3)] * 5  # halved from iteration 4 = 0.5 * 8


def test_cosine_annealing_ends_at_eta_min(image_dirs, tmp_path):
    lr = schedule(image_dirs, tmp_path, niter=100, default_lr_scheme="CosineAnnealingLR")
    assert lr(0, 2.0) == pytest.approx(2.0)
    assert lr(50, 2.0) == pytest.approx(1.0)
    assert lr(100, 2.0) == pytest.approx(0.0, abs=1e-12)  # not lr_gamma's 0.5 of the base any more
    lr = schedule(image_dirs, tmp_path, niter=100, default_lr_scheme="CosineAnnealingLR", eta_min=1e-7)
    assert lr(100, 1e-4) == pytest.approx(1e-7)


def test_cosine_annealing_with_restarts_as_the_official_code(image_dirs, tmp_path):
    lr = schedule(image_dirs, tmp_path, niter=300, default_lr_scheme="CosineAnnealingLR_Restart",
                  T_period=[100, 100, 100], restarts=[100, 200], restart_weights=[1, 0.5], eta_min=1e-7)
    base = 1e-4
    assert lr(0, base) == pytest.approx(base)
    assert lr(50, base) == pytest.approx(1e-7 + (base - 1e-7) / 2)
    assert lr(99, base) == pytest.approx(1e-7 + (base - 1e-7) * (1 + math.cos(math.pi * 0.99)) / 2)
    assert lr(100, base) == pytest.approx(base)  # restart, weight 1
    assert lr(200, base) == pytest.approx(0.5 * base)  # restart, weight 0.5
    assert lr(300, base) == pytest.approx(1e-7)  # the end of the last period
    # The official CosineAnnealingLR_Restart, stepped recursively, gives the same numbers.
    official, restarts, weights, periods, t_max, last = [base], [100, 200], [1, 0.5], [100, 100, 100], 100, 0
    for epoch in range(1, 301):
        prev = official[-1]
        if epoch in restarts:
            last, t_max = epoch, periods[restarts.index(epoch) + 1]
            official.append(base * weights[restarts.index(epoch)])
        else:
            k = epoch - last
            official.append((1 + math.cos(math.pi * k / t_max)) / (1 + math.cos(math.pi * (k - 1) / t_max))
                            * (prev - 1e-7) + 1e-7)
    for epoch in (1, 37, 99, 101, 150, 201, 250, 299):
        assert lr(epoch, base) == pytest.approx(official[epoch], rel=1e-9), epoch


def test_multistep_restarts_and_warmup(image_dirs, tmp_path):
    lr = schedule(image_dirs, tmp_path, niter=100, gen_lr_steps=[20, 60], restarts=[50], restart_weights=[0.5],
                  lr_gamma=0.1, warmup_iter=10)
    assert lr(5, 1.0) == pytest.approx(0.5)  # warm-up ramp
    assert lr(20, 1.0) == pytest.approx(0.1)
    assert lr(50, 1.0) == pytest.approx(0.5)  # restart: the weight of the base, milestones before it forgotten
    assert lr(60, 1.0) == pytest.approx(0.05)


def test_bad_schedule_options(image_dirs, tmp_path):
    with pytest.raises(ConfigError, match="T_period"):
        schedule(image_dirs, tmp_path, default_lr_scheme="CosineAnnealingLR_Restart", restarts=[10],
                 restart_weights=[1], T_period=[10])
    with pytest.raises(ConfigError, match="same length"):
        schedule(image_dirs, tmp_path, restarts=[10], restart_weights=[])
