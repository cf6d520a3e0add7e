"""Validation is a measurement: the same pixels and numbers at every pass, honest units, and sets whose
images are too small are trimmed or skipped when they are built, never at the first validation."""
import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from conftest import smooth_image, tiny_srflow_recipe
from models import build_network
from trainer.context import RunContext
from trainer.evaluators import build_evaluators
from trainer.evaluators.flow_gaussian_nll import FlowGaussianNLL, dequantise
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.options import parse_options


def test_validation_gives_the_same_numbers_at_every_pass(image_dirs, tmp_path):
    """DLAS's recipe says `eval: False` on the evaluator's dataset; random crops, flips and corruptions of
    validation items must still be the same at every pass (in every worker), so are the numbers."""
    recipe = tiny_srflow_recipe(image_dirs, tmp_path)
    gaussian = recipe["eval"]["evaluators"]["gaussian"]
    gaussian["dataset"].update({"eval": False, "num_corrupts_per_image": 2})
    recipe["eval"]["evaluators"]["crops"] = {**gaussian, "dataset": {
        **gaussian["dataset"], "mode": "single_image_extensible", "use_flip": True, "use_rot": True, "n_workers": 2}}
    recipe["datasets"]["val"].update({"num_corrupts_per_image": 1})
    recipe["val"] = {"heats": [0.0, 0.8], "samples": 1, "max_images": 1}
    trainer = Trainer(parse_options(recipe))
    first, second = trainer.validate(), trainer.validate()
    assert {"gaussian/nll_bpd", "crops/gaussian_diff", "val/psnr_t0", "val/psnr_t0.8"} <= set(first)
    assert first == second
    # The two NLLs differ in units and by the dequantisation noise only (this density is smooth at 1/255).
    assert first["gaussian/nll_bpd"] == pytest.approx(first["gaussian/nll_bits_per_hr_pixel"] / 3 + math.log2(255),
                                                      abs=0.01)


class GaussianFlow(torch.nn.Module):
    """A flow whose density is known: every HQ value independently N(mean, sigma^2), whatever the LR.
    Its `nll` is SRFlow's: -(logdet + log N(z; 0, I)) / (ln 2 * H * W)."""

    def __init__(self, mean: float, sigma: float):
        super().__init__()
        self.mean, self.sigma = mean, sigma

    def rrdb_preprocessing(self, lr):
        return None

    def forward(self, gt=None, lr=None, z=None, eps_std=None, reverse=False, epses=None, lr_enc=None,
                add_gt_noise=True):
        z = (gt.double() - self.mean) / self.sigma
        logdet = torch.full((gt.shape[0],), -math.log(self.sigma) * gt[0].numel(), dtype=torch.float64)
        logp = (-0.5 * math.log(2 * math.pi) - 0.5 * z ** 2).flatten(1).sum(1)
        nll = -(logdet + logp) / (math.log(2) * gt.shape[2] * gt.shape[3])
        return ([z] if epses is not None else z), nll, logdet


def test_bits_per_dim_equal_the_exact_probability_of_the_8_bit_image(image_dirs, tmp_path):
    opt = parse_options(tiny_srflow_recipe(image_dirs, tmp_path))
    flow = GaussianFlow(mean=0.45, sigma=0.2)
    env = RunContext(opt, {"generator": flow}, torch.device("cpu"))
    evaluator = FlowGaussianNLL("gaussian", opt["eval"]["evaluators"]["gaussian"], env)
    metrics = evaluator.evaluate(0)
    normal = torch.distributions.Normal(torch.tensor(flow.mean, dtype=torch.float64), flow.sigma)
    bits_per_dim, bits_per_hr_pixel, images = 0.0, 0.0, 0
    for batch in evaluator.loader:
        hq = batch["hq"].double()
        k = torch.round(hq * 255)  # the 8-bit image; the bin of value k is [k - 1/2, k + 1/2] / 255
        p_bin = normal.cdf((k + 0.5) / 255) - normal.cdf((k - 0.5) / 255)
        bits_per_dim -= float(torch.log2(p_bin).flatten(1).sum(1).sum()) / k[0].numel()
        bits_per_hr_pixel -= float(normal.log_prob(hq).sum()) / math.log(2) / (hq.shape[2] * hq.shape[3])
        images += hq.shape[0]
    assert metrics["gaussian/nll_bpd"] == pytest.approx(bits_per_dim / images, abs=2e-3)
    assert metrics["gaussian/nll_bpd"] > 0  # the probability of a discrete image is at most 1
    assert metrics["gaussian/nll_bits_per_hr_pixel"] == pytest.approx(bits_per_hr_pixel / images, rel=1e-9)
    assert evaluator.evaluate(0) == metrics


def test_dequantisation_stays_in_the_8_bit_bin_and_is_seeded():
    hq = torch.rand(2, 3, 8, 8)
    a = dequantise(hq, torch.Generator().manual_seed(0))
    assert torch.equal(a, dequantise(hq, torch.Generator().manual_seed(0)))
    assert ((a * 255 - torch.round(hq * 255)).abs() <= 0.5).all()
    assert not torch.equal(a, torch.round(hq * 255) / 255)


def test_validation_sets_skip_images_too_small_when_built(tmp_path):
    """8x8 and 16x16 images in a validation folder: the evaluator (target_size 32) skips them with a warning;
    the SR set trims every image to what the flow takes (LR sides even here, at force_multiple 1) and skips
    the ones that leave nothing; neither waits for the first validation to fail."""
    rng = np.random.default_rng(0)
    sizes = {"big": (96, 80), "sixteen": (16, 16), "eight": (8, 8), "four": (4, 4), "odd": (44, 36)}
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), smooth_image(rng, h, w))
    dirs = {"train": str(tmp_path), "val": str(tmp_path)}
    recipe = tiny_srflow_recipe(dirs, tmp_path / "experiments")
    recipe["datasets"]["val"]["force_multiple"] = 1
    opt = parse_options(recipe)
    env = RunContext(opt, {"generator": build_network(opt["networks"]["generator"], opt)}, torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sr, gaussian = build_evaluators(opt, env)
    skipped = [str(w.message) for w in caught if "skipping image" in str(w.message)]
    for name in ("sixteen", "eight", "four"):
        assert any(f"{name}.png" in s for s in skipped)
    assert [p.name for p, _ in sr.loader.dataset.pairs] == ["big.png", "eight.png", "odd.png", "sixteen.png"]
    for item in sr.loader.dataset:
        assert item["lq"].shape[1] % 2 == 0 and item["lq"].shape[2] % 2 == 0  # 2**L / scale
    assert [item["hq"].shape for item in gaussian.loader.dataset] == [(3, 32, 32)] * 2  # big, odd


def test_evaluator_dataset_mistakes_name_the_evaluator(image_dirs, tmp_path):
    opt = parse_options(tiny_srflow_recipe(image_dirs, tmp_path))
    env = RunContext(opt, {"generator": GaussianFlow(0.5, 0.2)}, torch.device("cpu"))
    opt_eval = opt["eval"]["evaluators"]["gaussian"]
    with pytest.raises(ConfigError, match=r"`eval.evaluators.gaussian.dataset.target_size` is required with "
                                          r"`eval.evaluators.gaussian.batch_size` 2"):
        FlowGaussianNLL("gaussian", {**opt_eval, "dataset": {**opt_eval["dataset"], "target_size": None}}, env)
    with pytest.raises(ConfigError, match=r"`eval.evaluators.gaussian.dataset.mode`.*did you mean `imagefolder`"):
        FlowGaussianNLL("gaussian", {**opt_eval, "dataset": {**opt_eval["dataset"], "mode": "imagefolde"}}, env)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = FlowGaussianNLL("gaussian", {**opt_eval, "dataset": {**opt_eval["dataset"], "max_images": 1}}, env)
    assert len(first.loader.dataset) == 1
