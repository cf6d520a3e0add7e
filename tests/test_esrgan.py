"""ESRGAN: DLAS's two recipes (options/esrgan/) train a generator and a discriminator, each in its own step,
with every loss active; the discriminators, GAN losses, VGG feature loss and image_patch behave as DLAS's."""
import contextlib

import numpy as np
import pytest
import torch

from conftest import ROOT, smooth_image
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.options import parse_options

GN_RECIPE = "train_div2k_esrgan.yml"
REFERENCE_RECIPE = "train_div2k_esrgan_reference.yml"


@pytest.fixture(scope="session")
def esrgan_images(tmp_path_factory):
    import cv2
    root = tmp_path_factory.mktemp("esrgan_images")
    rng = np.random.default_rng(1)
    for split, count in (("train", 4), ("val", 1)):
        (root / split).mkdir()
        for i in range(count):
            cv2.imwrite(str(root / split / f"{i}.png"), smooth_image(rng, 96, 96))
    return root


@pytest.fixture(scope="session")
def vgg_weights(tmp_path_factory):
    """Random weights in torchvision's VGG19 layout (the real ones would be downloaded)."""
    from models.vgg_features import _layers
    g = torch.Generator().manual_seed(0)
    layers = _layers().state_dict()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": torch.randn(v.shape, generator=g) * (0.05 if k.endswith("weight") else 0.01)
                for k, v in layers.items()}, path)
    return path


def tiny(images, root, vgg, recipe=GN_RECIPE, niter=4, extra=()):
    """DLAS's recipe shrunk for a CPU: tiny networks, small crops, every step and loss on from iteration 2."""
    sets = [f"path.experiments_root={root}", "gpu_ids=[]", "use_tb_logger=false", "checkpointing_enabled=false",
            f"datasets.train.paths={images / 'train'}", f"datasets.val.dataroot_GT={images / 'val'}",
            "datasets.train.batch_size=2", "datasets.train.n_workers=0",
            "networks.generator.nf=8", "networks.generator.nb=1", "networks.generator.gc=4",
            "networks.feature_discriminator.nf=8", f"train.niter={niter}", "train.val_freq=100",
            "logger.print_freq=1", "logger.save_checkpoint_freq=2", "logger.visual_debug_rate=0",
            "steps.feature_discriminator.after=2", "steps.generator.losses.feature.after=0",
            "steps.generator.losses.gan_gen_img.after=2", f"steps.generator.losses.feature.load_path={vgg}"]
    if recipe == GN_RECIPE:
        # 96-pixel crops; LR patches of 16 of their 24 pixels, HR patches of 64: the corners overlap by 32.
        sets += ["datasets.train.target_size=96", "networks.feature_discriminator.image_size=64",
                 "steps.feature_discriminator.injectors.plq.patch_size=16",
                 "steps.feature_discriminator.injectors.phq.patch_size=64",
                 "steps.generator.injectors.pglq.patch_size=16", "steps.generator.injectors.pghq.patch_size=64",
                 "steps.generator.losses.translational.patch_size=64",
                 "steps.generator.losses.translational.overlap=32", "steps.generator.losses.translational.after=0"]
    else:
        sets += ["datasets.train.target_size=64", "networks.feature_discriminator.image_size=64"]
    return sets + list(extra)


def weights(trainer, name):
    return {k: v.clone() for k, v in trainer.networks[name].state_dict().items()}


def all_weights(trainer):
    return {name: weights(trainer, name) for name in trainer.networks}


def assert_each_network_learned(trainer, before):
    """Every network's weights are finite and some changed since `before` (all_weights before training)."""
    for name in trainer.networks:
        after = weights(trainer, name)
        assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point()), name
        assert any(not torch.equal(v, after[k]) for k, v in before[name].items() if v.is_floating_point()), name


@pytest.mark.parametrize("recipe", [GN_RECIPE, REFERENCE_RECIPE])
def test_dlas_recipes_train_both_networks_with_every_loss(recipe, esrgan_images, vgg_weights, tmp_path):
    sets = tiny(esrgan_images, tmp_path, vgg_weights, recipe)
    opt = parse_options(recipe, sets)
    trainer = Trainer(opt)
    before = all_weights(trainer)
    logs = []
    original = trainer.train_step
    trainer.train_step = lambda state: logs.append(original(state)) or logs[-1]
    trainer.fit()
    losses = {key for log in logs for key in log}
    expected = {"feature_discriminator/gan_disc_img", "generator/pix", "generator/feature", "generator/gan_gen_img"}
    if recipe == GN_RECIPE:
        expected.add("generator/translational")
    assert expected <= losses
    assert "feature_discriminator/gan_disc_img" not in logs[0]  # the step's `after` holds it back
    assert_each_network_learned(trainer, before)


def test_resume_with_two_trained_networks_and_ema_is_bit_exact(esrgan_images, vgg_weights, tmp_path):
    """The generator's step draws noise and the translational loss a random corner: all of it resumes."""
    def run(root, niter, resume=None):
        sets = tiny(esrgan_images, root, vgg_weights, niter=niter, extra=["train.ema_decay=0.9"])
        trainer = Trainer(parse_options(GN_RECIPE, sets), resume=resume)
        trainer.fit()
        return trainer
    full = run(tmp_path / "full", 4)
    run(tmp_path / "split", 2)
    second = run(tmp_path / "split", 4, resume="auto")
    for name in ("generator", "feature_discriminator"):
        for key, value in weights(full, name).items():
            assert torch.equal(value, weights(second, name)[key]), (name, key)
        for key, value in full.emas[name].state_dict().items():
            assert torch.equal(value, second.emas[name].state_dict()[key]), (name, key)


def test_fp16_trains_both_networks_in_bf16_on_a_cpu_that_computes_it(esrgan_images, vgg_weights, tmp_path):
    """`fp16: true` with two trained networks: both steps run under the trainer's autocast (bf16 on the CPU),
    every loss stays finite and each network learns; the losses are logged as float32 numbers."""
    from utils import precision
    if precision.cpu_bf16_feature() is None:
        pytest.skip("this CPU does not compute bf16 natively: fp16 trains in float32 here")
    sets = tiny(esrgan_images, tmp_path, vgg_weights, REFERENCE_RECIPE, niter=4, extra=["fp16=true"])
    trainer = Trainer(parse_options(REFERENCE_RECIPE, sets))
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    before = all_weights(trainer)
    logs = []
    original = trainer.train_step
    trainer.train_step = lambda state: logs.append(original(state)) or logs[-1]
    trainer.fit()
    assert not trainer.nan_skips
    assert {"feature_discriminator/gan_disc_img", "generator/gan_gen_img", "generator/feature"} <= \
        {key for log in logs for key in log}
    assert all(np.isfinite(float(v)) for log in logs for v in log.values())
    assert_each_network_learned(trainer, before)
    for name in trainer.networks:  # weights stay float32
        assert all(v.dtype == before[name][k].dtype for k, v in weights(trainer, name).items()), name


def test_float16_with_one_grad_scaler_trains_both_networks(esrgan_images, vgg_weights, tmp_path, monkeypatch):
    """The path of a GPU without bf16, run on the CPU: float16 autocast and a GradScaler shared by the two steps
    (each scales its own backward, unscales, steps and updates). Both networks learn and the scale stays finite."""
    import trainer.trainer as trainer_module
    if not hasattr(torch.amp, "GradScaler"):
        pytest.skip("torch < 2.3 has no CPU GradScaler")
    monkeypatch.setattr(Trainer, "_amp_dtype", lambda self: torch.float16 if self.opt["fp16"] else None)
    monkeypatch.setattr(trainer_module, "grad_scaler", lambda: torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    sets = tiny(esrgan_images, tmp_path, vgg_weights, REFERENCE_RECIPE, niter=4, extra=["fp16=true"])
    trainer = Trainer(parse_options(REFERENCE_RECIPE, sets))
    assert trainer.amp_dtype == torch.float16 and trainer.scaler is not None
    before = all_weights(trainer)
    trainer.fit()
    assert not trainer.nan_skips
    assert 0 < trainer.scaler.get_scale() < float("inf")
    assert_each_network_learned(trainer, before)


def test_each_step_updates_only_its_own_network(esrgan_images, vgg_weights, tmp_path):
    """The generator's GAN loss goes through the discriminator, which gets no gradient from it (and the
    discriminator's step gives the generator none): DLAS's rule."""
    sets = tiny(esrgan_images, tmp_path, vgg_weights, REFERENCE_RECIPE, extra=["steps.feature_discriminator.after=0",
                                                             "steps.generator.losses.gan_gen_img.after=0"])
    trainer = Trainer(parse_options(REFERENCE_RECIPE, sets))
    batch = trainer.to_device(next(trainer.batches()))
    d_step, g_step = trainer.steps
    trainer.it = trainer.env.iteration = 1
    for step, other in ((d_step, "generator"), (g_step, "feature_discriminator")):
        before = weights(trainer, other)
        grads = [None if p.grad is None else p.grad.clone() for p in trainer.networks[other].parameters()]
        before_own = weights(trainer, step.networks[0])
        result = step.run(dict(batch), 1, 1, trainer.autocast, None, lambda net, last: contextlib.nullcontext())
        batch.update(result.state)
        assert not result.skipped
        net = trainer.networks[other]
        assert all(g is None and p.grad is None or torch.equal(g, p.grad) for g, p in zip(grads, net.parameters())), \
            f"{step.name} gave {other} gradients"
        # Parameters untouched (BatchNorm's running statistics are buffers, which every forward pass updates).
        params = dict(net.named_parameters())
        assert all(torch.equal(before[k], params[k]) for k in params)
        assert all(p.requires_grad for p in net.parameters())  # frozen only while the other step ran
        own = dict(trainer.networks[step.networks[0]].named_parameters())
        assert any(not torch.equal(before_own[k], own[k]) for k in own)
    trainer.close()


def test_gradient_accumulation_hands_the_whole_batch_to_the_next_step(esrgan_images, vgg_weights, tmp_path):
    sets = tiny(esrgan_images, tmp_path, vgg_weights, REFERENCE_RECIPE, niter=2,
                extra=["train.mega_batch_factor=2", "steps.feature_discriminator.after=0",
                       "steps.generator.losses.gan_gen_img.after=0"])
    trainer = Trainer(parse_options(REFERENCE_RECIPE, sets))
    seen = []
    original = trainer.steps[1].run
    trainer.steps[1].run = lambda state, *a: seen.append({k: v.shape[0] for k, v in state.items()
                                                          if torch.is_tensor(v)}) or original(state, *a)
    trainer.fit()
    assert seen and all(shapes == {"hq": 2, "lq": 2, "dgen": 2} for shapes in seen), seen


def test_missing_vgg_weights_stop_the_recipe_check_with_one_line(esrgan_images, tmp_path, monkeypatch, capsys):
    import train
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    sets = [s for s in tiny(esrgan_images, tmp_path / "run", "x", REFERENCE_RECIPE) if "load_path" not in s]
    code = train.main(["-opt", REFERENCE_RECIPE] + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert f"`{expected}` does not exist" in err and "steps.generator.losses.feature" in err
    assert "torchvision.models.vgg19(weights='IMAGENET1K_V1')" in err and "load_path" in err
    assert not (tmp_path / "run").exists()  # refused before anything started


def test_a_discriminator_given_crops_of_another_size_is_refused_naming_the_key(esrgan_images, vgg_weights,
                                                                               tmp_path):
    sets = tiny(esrgan_images, tmp_path, vgg_weights, REFERENCE_RECIPE, extra=["datasets.train.target_size=96"])
    with pytest.raises(ConfigError, match=r"`networks.feature_discriminator.image_size` is 64 .* "
                                          r"`steps.feature_discriminator.losses.gan_disc_img.real` \(`hq`\) is 96x96 "
                                          r"\(datasets.train.target_size\)"):
        parse_options(REFERENCE_RECIPE, sets)
    sets = tiny(esrgan_images, tmp_path, vgg_weights, GN_RECIPE,
                extra=["steps.feature_discriminator.injectors.phq.patch_size=32"])
    with pytest.raises(ConfigError, match=r"steps.feature_discriminator.injectors.phq.patch_size"):
        parse_options(GN_RECIPE, sets)


def test_a_misspelt_network_type_or_discriminator_is_one_line_naming_the_key(esrgan_images, vgg_weights, tmp_path):
    sets = tiny(esrgan_images, tmp_path, vgg_weights, GN_RECIPE)
    with pytest.raises(ConfigError, match=r"`networks.feature_discriminator.type` must be generator or "
                                          r"discriminator, got `discrimnator` \(did you mean `discriminator`\?\)"):
        parse_options(GN_RECIPE, sets + ["networks.feature_discriminator.type=discrimnator"])
    with pytest.raises(ConfigError, match=r"unknown key `networks.feature_discriminator.which_model_G`"):
        parse_options(GN_RECIPE, sets + ["networks.feature_discriminator.which_model_G=RRDBNet"])


def test_discriminators_have_dlas_parameter_names_and_sizes():
    from models import build_network
    expected = ["conv0_0.weight", "conv0_0.bias", "conv0_1.weight", "bn0_1.weight", "bn0_1.bias"]
    for stage in range(1, 5):
        expected += [f"conv{stage}_0.weight", f"bn{stage}_0.weight", f"bn{stage}_0.bias",
                     f"conv{stage}_1.weight", f"bn{stage}_1.weight", f"bn{stage}_1.bias"]
    expected += ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    for recipe, norm, size in ((REFERENCE_RECIPE, torch.nn.BatchNorm2d, 128), (GN_RECIPE, torch.nn.GroupNorm, 96)):
        opt = parse_options(recipe, check_paths=False)
        net = build_network(opt["networks"]["feature_discriminator"], opt)
        assert [n for n, _ in net.named_parameters()] == expected
        assert isinstance(net.bn2_1, norm)
        cells = size // 32
        assert net.linear1.weight.shape == (100, 512 * cells * cells)
        assert net(torch.rand(2, 3, size, size)).shape == (2, 1)


class _LinearD(torch.nn.Module):
    """D(x) = <w, x>: its gradient with respect to x is w."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def _gan_loss(kind, gan_type, **opt):
    from trainer.context import RunContext
    from trainer.losses import LOSSES
    d = _LinearD(torch.full((1, 2, 2), 0.5))
    env = RunContext({}, {"d": d}, torch.device("cpu"))
    loss = LOSSES.get(kind)("l", {"type": kind, "weight": 1, "gan_type": gan_type, "real": "hq", "fake": "gen",
                                  "noise": 0, "gradient_penalty": False, "discriminator": "d",
                                  "detach_real": True, **opt}, env)
    loss.step_networks = ["d"] if kind == "discriminator_gan" else ["g"]
    return loss


def test_gan_losses_follow_dlas_formulas():
    import torch.nn.functional as F
    real, fake = torch.tensor([[[[1.0, 0], [0, 1]]]]), torch.tensor([[[[0.5, 0], [0, 0]]], [[[1.0, 1], [1, 1]]]])
    real = real.expand(2, 1, 2, 2)
    state = {"hq": real, "gen": fake}
    d_real, d_fake = torch.tensor([[1.0], [1.0]]), torch.tensor([[0.25], [2.0]])
    bce = F.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(2, 1), torch.zeros(2, 1)
    cases = {
        ("discriminator_gan", "gan"): bce(d_real, ones) + bce(d_fake, zeros),
        ("discriminator_gan", "lsgan"): F.mse_loss(d_real, ones) + F.mse_loss(d_fake, zeros),
        ("discriminator_gan", "ragan"): bce(d_real - d_fake.mean(), ones) + bce(d_fake - d_real.mean(), zeros),
        ("generator_gan", "gan"): bce(d_fake, ones),
        ("generator_gan", "lsgan"): F.mse_loss(d_fake, ones),
        ("generator_gan", "ragan"): (bce(d_real - d_fake.mean(), zeros) + bce(d_fake - d_real.mean(), ones)) / 2,
    }
    for (kind, gan_type), expected in cases.items():
        torch.testing.assert_close(_gan_loss(kind, gan_type)(state), expected, msg=f"{kind} {gan_type}")
    # The penalty: 10 * (|w| - 1)^2 with |w| = 1 for w = 0.5 everywhere on 4 pixels: nothing added...
    loss = _gan_loss("discriminator_gan", "gan", gradient_penalty=True)
    torch.testing.assert_close(loss(state), cases[("discriminator_gan", "gan")])
    # ... and 10 * (2 - 1)^2 = 10 for w = 1.
    loss.env.networks["d"].w.data.fill_(1.0)
    plain = _gan_loss("discriminator_gan", "gan")
    plain.env.networks["d"].w.data.fill_(1.0)
    torch.testing.assert_close(loss(state) - plain(state), torch.tensor(10.0))


def test_vgg_features_are_torchvisions_vgg19_conv5_4_before_relu_on_imagenet_normalised_input(vgg_weights):
    import torchvision
    from models.vgg_features import VGGFeatures
    reference = torchvision.models.vgg19(weights=None)
    reference.load_state_dict(torch.load(vgg_weights), strict=False)
    x = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = reference.features[:35]((x - mean) / std)
    got = VGGFeatures(vgg_weights)(x)
    torch.testing.assert_close(got, expected)
    assert got.shape == (1, 512, 2, 2) and (got < 0).any()  # before the ReLU


def test_image_patch_cuts_aligned_lr_and_hr_patches():
    from trainer.context import RunContext
    from trainer.injectors import INJECTORS
    env = RunContext({}, {}, torch.device("cpu"))
    make = INJECTORS.get("image_patch")
    lq, hq = torch.rand(1, 4, 8, 8), torch.rand(1, 3, 32, 32)
    plq = make("p", {"in": "lq", "out": "plq", "patch_size": 6}, env)({"lq": lq})
    phq = make("p", {"in": "hq", "out": "phq", "patch_size": 24}, env)({"hq": hq})
    assert torch.equal(plq["plq"], lq[:, :3, :6, :6]) and torch.equal(phq["phq"], hq[:, :, :24, :24])
    assert torch.equal(plq["plq_top_left"], lq[..., :6, :6]) and plq["plq_top_left"].shape[1] == 4
    assert torch.equal(plq["plq_bottom_right"], lq[..., 2:, 2:]) and torch.equal(phq["phq_top_right"], hq[..., :24, 8:])
    env.training = False  # evaluation: whole images
    assert torch.equal(make("p", {"in": "lq", "out": "plq", "patch_size": 6}, env)({"lq": lq})["plq"], lq)


def test_test_py_scores_an_esrgan_generator_with_the_srflow_table(esrgan_images, tmp_path):
    """The shipped test recipe, its paths and sizes changed: results and the summary with LR-PSNR."""
    import csv
    from conftest import randomize, run_test_py
    sets = [f"datasets.test.dataroot_GT={esrgan_images / 'val'}", "networks.generator.nf=8", "networks.generator.nb=1",
            "networks.generator.gc=4", "gpu_ids=[]", f"path.results_root={tmp_path / 'results'}"]
    from models.rrdb import RRDBNet
    weights = tmp_path / "esrgan.pth"
    torch.save(randomize(RRDBNet(nf=8, nb=1, gc=4)).state_dict(), weights)
    args = ["-opt", "test_div2k_esrgan.yml"] + [a for s in sets + [f"path.pretrain_model_generator={weights}"]
                                                for a in ("--set", s)]
    assert run_test_py(*args) == 0
    out = tmp_path / "results" / "div2k_val"
    assert (out / "0.png").is_file()
    with open(out / "summary.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["lr_psnr"]) > 0 and float(row["psnr_y"]) > 0


def test_the_srflow_gan_fine_tune_recipe_trains_the_flow_through_the_gan_loss(esrgan_images, vgg_weights, tmp_path):
    """finetune_div2k_srflow_gan.yml, shrunk: the generator_gan loss alone (the others held back by `after`)
    gives the flow's own layers gradients through the sample decoded at t = 0.9, and none to the
    discriminator."""
    from conftest import randomize
    flow = "networks.generator.flow"
    sets = [f"path.experiments_root={tmp_path}", "gpu_ids=[]", "use_tb_logger=false", "checkpointing_enabled=false",
            "path.pretrain_model_generator=", f"datasets.train.paths={esrgan_images / 'train'}",
            f"datasets.val.dataroot_GT={esrgan_images / 'val'}", "datasets.train.batch_size=2",
            "datasets.train.n_workers=0", "datasets.train.target_size=32", "networks.generator.nf=8",
            "networks.generator.nb=2", "networks.generator.gc=4", "networks.generator.K=2", f"{flow}.patch_size=32",
            f"{flow}.K=2", f"{flow}.stackRRDB.blocks=[0,1]", f"{flow}.CondAffineSeparatedAndCond.hidden_channels=8",
            "networks.feature_discriminator.nf=8", "networks.feature_discriminator.image_size=32",
            f"steps.generator.losses.feature.load_path={vgg_weights}",
            "steps.generator.losses.log_likelihood.after=100", "steps.generator.losses.feature.after=100"]
    trainer = Trainer(parse_options("finetune_div2k_srflow_gan.yml", sets))
    randomize(trainer.networks["generator"]).train()  # a fresh flow's couplings output zeros: no gradient behind them
    trainer.it = trainer.env.iteration = 1
    state = trainer.to_device(next(trainer.batches()))
    g_step = trainer.steps[1]
    result = g_step.run(state, 1, 1, trainer.autocast, None, lambda net, last: contextlib.nullcontext())
    assert set(result.logs) == {"generator/gan_gen_img"}
    grads = {n: p.grad for n, p in trainer.networks["generator"].named_parameters()
             if n.startswith("flowUpsamplerNet.") and ".affine." in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0][:3]
    assert all(p.grad is None for p in trainer.networks["feature_discriminator"].parameters())
    trainer.close()


@pytest.mark.slow
def test_two_processes_train_both_networks_of_the_dlas_recipe(esrgan_images, vgg_weights, tmp_path):
    """torchrun, 2 CPU processes: DistributedDataParallel around both trained networks, every loss on (the
    discriminator called twice per loss, the gradient penalty, the generator called again by translational)."""
    from test_distributed import TORCHRUN, torchrun
    if TORCHRUN is None:
        pytest.skip("torchrun not installed")
    sets = tiny(esrgan_images, tmp_path, vgg_weights, extra=["steps.feature_discriminator.after=0",
                                                             "steps.generator.losses.gan_gen_img.after=0"])
    run = torchrun(ROOT / "options" / "esrgan" / GN_RECIPE, *[a for s in sets for a in ("--set", s)])
    log = run.stdout + run.stderr
    for loss in ("gan_disc_img", "generator/pix", "generator/feature", "gan_gen_img", "translational"):
        assert loss in log
    assert {p.name for p in (tmp_path / "models").iterdir()} >= {"4_generator.pth", "4_feature_discriminator.pth"}
