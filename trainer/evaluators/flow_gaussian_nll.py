"""How well a flow models held-out HQ images given their LR: DLAS's `flownet_gaussian` numbers (how close its
latents are to a standard gaussian) and the negative log-likelihood in bits per dimension."""
import math
from typing import Any, Dict

import torch
from torch.utils.data import Subset

from data import build_dataloader, build_dataset
from models.srflow.gaussian import gaussian_logp
from trainer.context import RunContext
from trainer.evaluators import EVAL_DATASET_KEYS, EVALUATORS
from utils.dist import unwrap
from utils.errors import ConfigError

LEVELS = 255  # 8-bit values are k / 255 (k = 0..255): each one's bin is 1/255 wide on the [0, 1] scale
DEQUANTISATION_SEED = 0  # the dequantisation noise is the same at every pass


def standard_normal_logp(z: torch.Tensor) -> torch.Tensor:
    """Per-image log-density of z under N(0, I), summed over C, H, W, in float64."""
    return gaussian_logp(z.double())


def dequantise(hq: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`hq` rounded to 8 bits, plus noise uniform over each value's bin. The noise is drawn on the CPU, so it
    is the same on every device."""
    noise = torch.rand(hq.shape, generator=generator, dtype=torch.float32) - 0.5
    return (torch.round(hq * LEVELS) + noise.to(hq.device)) / LEVELS


@EVALUATORS.register("flownet_gaussian", keys={"dataset": EVAL_DATASET_KEYS})
class FlowGaussianNLL:
    """Numbers over the evaluator's dataset (mode `imagefolder` unless it says otherwise: the same pixels at
    every pass; see data/resized_image_dataset.py). x is an HQ image with C x H x W = D values:

    - `gaussian_diff`, as DLAS computes it: the latents of x given its LR, encoded without noise; for each
      latent level, their standard-normal log-density summed over the level and averaged over the batch;
      averaged over levels and batches, no log taken. Higher is better; it grows with the image size.
    - `gaussian_diff_per_element`: that log-density per latent element (independent of the image size);
      `beyond_3sigma`: the share of latent elements beyond 3.
    - `nll_bpd`: bits per dimension, as the flow literature reports them: -log2 P(x8 | LR) / D, where x8 is x
      rounded to 8 bits and P the probability the flow gives its 8-bit bin. Estimated as usual, from the
      density at x8 plus noise u uniform over the bin: (-log2 p(x8 + u | LR) + D * log2(255)) / D (a bin is
      1/255 wide). The noise is seeded: the same at every pass. Positive; a flat density over [0, 1] gives
      log2(255) = 7.99.
    - `nll_bits_per_hr_pixel`: the flow's own `nll` output for x without noise, -log2 p(x | LR) / (H * W):
      bits per HR pixel (C values each) of the continuous density, without the dequantisation term, hence
      negative; about 3 * (nll_bpd - 7.99). It is SRFlow's training loss, less that loss's term for its
      dequantisation noise.
    """

    def __init__(self, name: str, opt_eval: Dict[str, Any], env: RunContext):
        self.name, self.env = name, env
        self.net_name = opt_eval["for"]
        opt, where = env.opt, f"eval.evaluators.{name}"
        ds = {**opt_eval["dataset"], "batch_size": opt_eval["batch_size"], "phase": "val"}
        if ds["batch_size"] > 1 and not ds.get("target_size"):
            raise ConfigError(f"`{where}.dataset.target_size` is required with `{where}.batch_size` "
                              f"{ds['batch_size']}: whole images of different sizes cannot be batched")
        dataset = build_dataset(ds, opt, "val", f"{where}.dataset")
        if ds.get("max_images"):
            dataset = Subset(dataset, range(min(ds["max_images"], len(dataset))))
        self.loader = build_dataloader(dataset, ds, "val", opt["manual_seed"])

    @torch.no_grad()
    def evaluate(self, it: int, logger: Any = None) -> Dict[str, float]:
        net = self.env.networks[self.net_name]
        was_training = net.training
        net.eval()
        sums: Dict[str, float] = {}
        noise = torch.Generator().manual_seed(DEQUANTISATION_SEED)
        try:
            for batch in self.loader:
                hq, lq = batch["hq"].to(self.env.device), batch["lq"].to(self.env.device)
                for key, value in self.batch_sums(unwrap(net), hq, lq, noise).items():
                    sums[key] = sums.get(key, 0.0) + value
        finally:
            net.train(was_training)
        levels, elements, images = (max(sums.get(k, 0), 1) for k in ("levels", "elements", "images"))
        n = self.name
        return {f"{n}/gaussian_diff": sums.get("level_logp", 0.0) / levels,
                f"{n}/gaussian_diff_per_element": sums.get("element_logp", 0.0) / elements,
                f"{n}/beyond_3sigma": sums.get("beyond", 0.0) / elements,
                f"{n}/nll_bpd": sums.get("bpd", 0.0) / images,
                f"{n}/nll_bits_per_hr_pixel": sums.get("hr_pixel_bits", 0.0) / images}

    @staticmethod
    def batch_sums(model: torch.nn.Module, hq: torch.Tensor, lq: torch.Tensor,
                   noise: torch.Generator) -> Dict[str, float]:
        """One batch's sums and counts for `evaluate`; the RRDB runs once for both encodings."""
        lr_enc = model.rrdb_preprocessing(lq)
        epses, nll, _ = model(gt=hq, lr=lq, z=None, eps_std=None, reverse=False, epses=[], lr_enc=lr_enc,
                              add_gt_noise=False)
        _, nll_noisy, _ = model(gt=dequantise(hq, noise), lr=lq, z=None, eps_std=None, reverse=False, epses=None,
                                lr_enc=lr_enc, add_gt_noise=False)
        logps = [standard_normal_logp(z) for z in epses]
        bpd = nll_noisy.double() / hq.shape[1] + math.log2(LEVELS)  # (-log2 p * H*W + D log2 255) / D
        return {"level_logp": sum(float(logp.mean()) for logp in logps), "levels": len(logps),
                "element_logp": sum(float(logp.sum()) for logp in logps), "elements": sum(z.numel() for z in epses),
                "beyond": sum(int((z.abs() > 3).sum()) for z in epses),
                "bpd": float(bpd.sum()), "hr_pixel_bits": float(nll.double().sum()), "images": hq.shape[0]}
