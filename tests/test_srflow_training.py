"""SRFlow's stages 2 and 3 through the trainer: freezing, unfreezing, hand-off, the gaussian evaluator."""
import math
import warnings

import pytest
import torch

from conftest import ROOT, tiny_rrdb_recipe, tiny_srflow_recipe
from trainer.context import RunContext
from trainer.evaluators.flow_gaussian_nll import FlowGaussianNLL
from trainer.trainer import Trainer
from utils.options import parse_options


@pytest.fixture(scope="module")
def stage1(image_dirs, tmp_path_factory):
    """A tiny stage-1 RRDB whose layout matches the tiny SRFlow's RRDB."""
    root = tmp_path_factory.mktemp("stage1")
    recipe = tiny_rrdb_recipe(image_dirs, root, niter=10, val_freq=10)
    recipe["networks"]["generator"].update(nf=8, nb=2, gc=4)
    history = Trainer(parse_options(recipe)).fit()
    return {"weights": root / "models" / "10_generator.pth", "psnr": history[-1]["val/psnr"]}


def rrdb_state(trainer):
    return {k: v.clone() for k, v in trainer.networks["generator"].RRDB.state_dict().items()}


def record_losses(trainer):
    losses = []
    step = trainer.train_step
    trainer.train_step = lambda state: (lambda logs: losses.append(logs["generator/log_likelihood"]) or logs)(step(state))
    return losses


def test_stage2_keeps_rrdb_frozen_and_lowers_nll(image_dirs, tmp_path, stage1):
    opt = parse_options(tiny_srflow_recipe(image_dirs, tmp_path, str(stage1["weights"]), niter=40, val_freq=40))
    trainer = Trainer(opt)
    before = rrdb_state(trainer)
    optimized = {id(p) for g in trainer.steps[0].optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimized for p in trainer.networks["generator"].RRDB.parameters())
    losses = record_losses(trainer)
    history = trainer.fit()
    for key, value in rrdb_state(trainer).items():
        assert torch.equal(value, before[key]), key
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.5
    # The frozen RRDB inside SRFlow is stage 1's network: the same validation PSNR (proof it loaded).
    assert history[0]["val/psnr_rrdb"] == pytest.approx(stage1["psnr"], abs=1e-6)
    assert {"gaussian/gaussian_diff", "gaussian/nll_bpd", "gaussian/beyond_3sigma", "val/psnr_t0",
            "val/diversity_t0.8"} <= set(history[0])


def test_stage3_trains_rrdb_and_keeps_flow_optimizer_state_on_resume(image_dirs, tmp_path, stage1):
    recipe = tiny_srflow_recipe(image_dirs, tmp_path, str(stage1["weights"]), niter=6, val_freq=100)
    Trainer(parse_options(recipe)).fit()
    trainer = Trainer(parse_options(recipe, ["train.niter=10", "networks.generator.train_RRDB=true"]),
                      resume="auto")
    step = trainer.steps[0]
    assert len(step.param_names) == 2  # the flow's saved group, then the RRDB's new one
    assert all(n.startswith("generator.RRDB.") for n in step.param_names[1])
    flow_param = step.optimizer.param_groups[0]["params"][0]
    assert step.optimizer.state[flow_param]["step"] == 6  # Adam's state came back with the flow
    before = rrdb_state(trainer)
    history = trainer.fit()
    assert any(not torch.equal(v, before[k]) for k, v in rrdb_state(trainer).items())
    # validation scores the RRDB's own SR only while it is frozen: no loss trains its HR head now
    assert "val/psnr_t0" in history[-1] and "val/psnr_rrdb" not in history[-1]


def unfreeze_steps(trainer):
    steps = []
    original = trainer.unfreeze

    def record(name, reason, announce=True):
        steps.append(trainer.it)
        original(name, reason, announce)
    trainer.unfreeze = record
    return steps


def test_train_rrdb_delay_unfreezes_at_that_fraction_of_niter_and_trains_at_lr_rrdb(image_dirs, tmp_path, stage1):
    trainer = Trainer(parse_options(tiny_srflow_recipe(image_dirs, tmp_path, str(stage1["weights"]), niter=8,
                                                       val_freq=100), ["networks.generator.train_RRDB_delay=0.5",
                                                                       "steps.generator.optimizer_params.lr_RRDB=3e-4"]))
    steps = unfreeze_steps(trainer)
    snapshots, lrs = {}, {}
    step = trainer.train_step

    def record(state):
        snapshots[trainer.it] = rrdb_state(trainer)
        logs = step(state)
        lrs[trainer.it] = [g["lr"] for g in trainer.steps[0].optimizer.param_groups]
        return logs
    trainer.train_step = record
    trainer.fit()
    # As the official code: frozen for int(0.5 * 8) = 4 iterations, trained from iteration 5 on.
    assert steps == [5]
    assert all(torch.equal(snapshots[5][k], v) for k, v in snapshots[1].items())
    assert any(not torch.equal(snapshots[8][k], v) for k, v in snapshots[5].items())
    assert lrs[4] == [pytest.approx(1e-3)]
    assert lrs[5] == [pytest.approx(1e-3), pytest.approx(3e-4)]  # the flow at `lr`, the RRDB at `lr_RRDB`
    rrdb_group = trainer.steps[0].param_names[1]
    assert rrdb_group and all(".RRDB." in n for n in rrdb_group)


def test_auto_unfreeze_when_the_metric_plateaus(image_dirs, tmp_path):
    recipe = tiny_srflow_recipe(image_dirs, tmp_path, niter=12, val_freq=4)
    recipe["train"]["auto_unfreeze"] = {"metric": "nll_bpd", "patience": 1, "min_delta": 1e9}
    trainer = Trainer(parse_options(recipe))
    steps = unfreeze_steps(trainer)
    trainer.fit()
    assert steps == [8]  # validation at 4 sets the best; at 8 it has not improved by min_delta
    assert trainer.networks["generator"].train_rrdb


def test_auto_unfreeze_memory_survives_a_resume(image_dirs, tmp_path):
    """Stopped between the validation that set the best and the one that unfreezes: the resumed run
    unfreezes at the same validation as an uninterrupted one."""
    def run(root, niter, resume=None):
        recipe = tiny_srflow_recipe(image_dirs, root, niter=niter, val_freq=4)
        recipe["train"]["auto_unfreeze"] = {"metric": "nll_bpd", "patience": 2, "min_delta": 1e9}
        recipe["logger"]["save_checkpoint_freq"] = 4
        trainer = Trainer(parse_options(recipe), resume=resume)
        steps = unfreeze_steps(trainer)
        trainer.fit()
        return steps, trainer

    straight, _ = run(tmp_path / "straight", 16)
    run(tmp_path / "split", 8)
    resumed, trainer = run(tmp_path / "split", 16, resume="auto")
    assert straight == resumed == [12]
    assert trainer.networks["generator"].train_rrdb


class FixedLatents(torch.nn.Module):
    """Stands in for a flow: returns the same latents for every batch."""

    def __init__(self, latents):
        super().__init__()
        self.latents = latents

    def rrdb_preprocessing(self, lr):
        return None

    def forward(self, gt=None, lr=None, z=None, eps_std=None, reverse=False, epses=None, lr_enc=None,
                add_gt_noise=True):
        return [l[: gt.shape[0]] for l in self.latents], torch.full((gt.shape[0],), 1.5), torch.zeros(gt.shape[0])


def test_gaussian_evaluator_equals_a_hand_computation(image_dirs, tmp_path):
    g = torch.Generator().manual_seed(0)
    latents = [torch.randn(2, 6, 4, 4, generator=g) * 2, torch.randn(2, 12, 2, 2, generator=g)]
    opt = parse_options(tiny_srflow_recipe(image_dirs, tmp_path))
    env = RunContext(opt, {"generator": FixedLatents(latents)}, torch.device("cpu"))
    metrics = FlowGaussianNLL("gaussian", opt["eval"]["evaluators"]["gaussian"], env).evaluate(0)
    # Two validation images, batch size 2: one batch. Per level: log N(z; 0, 1) summed per image, batch mean.
    per_level = [(-0.5 * torch.log(torch.tensor(2 * torch.pi)) - 0.5 * z ** 2).sum(dim=(1, 2, 3)).mean()
                 for z in latents]
    assert metrics["gaussian/gaussian_diff"] == pytest.approx(float(sum(per_level) / 2), rel=1e-6)
    elements = sum(z.numel() for z in latents)
    assert metrics["gaussian/gaussian_diff_per_element"] == pytest.approx(
        float(sum(pl * 2 for pl in per_level) / elements), rel=1e-6)
    assert metrics["gaussian/beyond_3sigma"] == pytest.approx(
        float(sum((z.abs() > 3).sum() for z in latents) / elements))
    assert metrics["gaussian/nll_bits_per_hr_pixel"] == pytest.approx(1.5)
    assert metrics["gaussian/nll_bpd"] == pytest.approx(1.5 / 3 + math.log2(255))


def test_dlas_recipes_run_with_only_paths_and_sizes_changed(image_dirs, tmp_path):
    """DLAS's stage-1 recipe, then its stage-2 recipe on stage 1's output, shrunk through --set."""
    def shrink(net_prefix):
        return [f"{net_prefix}.nf=8", f"{net_prefix}.nb=2", "gpu_ids=[]", "datasets.train.n_workers=0",
                "datasets.train.batch_size=2", "train.niter=2", "train.val_freq=2", "logger.save_checkpoint_freq=2",
                "logger.print_freq=1", "logger.visual_debug_rate=1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stage1 = parse_options(ROOT / "options/srflow/train_div2k_rrdb_psnr.yml", shrink("networks.generator") + [
            f"datasets.train.paths={image_dirs['train']}", f"datasets.val.dataroot_GT={image_dirs['val']}",
            "datasets.train.target_size=32", "datasets.val.force_multiple=1", "scale=2",
            f"path.experiments_root={tmp_path / 's1'}"])
    Trainer(stage1).fit()
    stage2 = parse_options(ROOT / "options/srflow/train_div2k_srflow.yml", shrink("networks.generator") + [
        f"datasets.train.paths={image_dirs['train']}", "datasets.train.target_size=32",
        f"networks.generator.pretrain_rrdb={tmp_path / 's1' / 'models' / '2_generator.pth'}",
        "networks.generator.K=1", "networks.generator.flow.K=1", "networks.generator.flow.patch_size=32",
        "networks.generator.flow.stackRRDB.blocks=[0,1]",
        f"eval.evaluators.gaussian.dataset.paths={image_dirs['val']}",
        "eval.evaluators.gaussian.dataset.target_size=32", f"path.experiments_root={tmp_path / 's2'}"])
    history = Trainer(stage2).fit()
    assert "gaussian/gaussian_diff" in history[-1]
    assert (tmp_path / "s2" / "models" / "2_generator.pth").is_file()
    assert any((tmp_path / "s2" / "visual_dbg").rglob("*.png"))


def _weight_l1_recipe(image_dirs, tmp_path, args):
    recipe = tiny_srflow_recipe(image_dirs, tmp_path, niter=12, val_freq=100)
    step = recipe["steps"]["generator"]
    step["injectors"]["mean_inj"] = {"type": "generator", "generator": "generator", "in": args, "out": ["mean_sr"]}
    step["losses"]["l1"] = {"type": "pix", "criterion": "l1", "weight": 0.5, "real": "hq", "fake": "mean_sr"}
    step["losses"]["log_likelihood"]["weight"] = 0  # the L1 term alone must train the flow
    return Trainer(parse_options(recipe))


def test_the_official_weight_l1_the_dlas_way(image_dirs, tmp_path):
    """Official SRFlow's `weight_l1`: an L1 loss on the mean image, decoded with gradients through the flow
    (reverse_with_grad, the 7th argument)."""
    trainer = _weight_l1_recipe(image_dirs, tmp_path, ["None", "lq", "None", 0, True, "None", True])
    flow_params = [p for n, p in trainer.networks["generator"].named_parameters() if "flowUpsamplerNet" in n]
    logs = []
    original = trainer.train_step
    trainer.train_step = lambda state: (lambda out: logs.append(out) or out)(original(state))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "receives no gradient" warning
        trainer.fit()
    l1 = [entry["generator/l1"] for entry in logs]
    assert all(math.isfinite(v) for v in l1) and sum(l1[-3:]) < sum(l1[:3])
    # the NLL's weight is 0, so every non-zero gradient of the flow comes from the L1 term
    assert sum(p.grad.abs().sum().item() for p in flow_params if p.grad is not None) > 0


def test_a_loss_on_a_reverse_pass_without_gradients_is_reported(image_dirs, tmp_path):
    trainer = _weight_l1_recipe(image_dirs, tmp_path, ["None", "lq", "None", 0, True])  # no reverse_with_grad
    with pytest.warns(RuntimeWarning, match=r"losses\.l1 receives no gradient.*reverse_with_grad") as caught:
        trainer.fit()
    assert sum("receives no gradient" in str(w.message) for w in caught) == 1  # once, not every iteration
