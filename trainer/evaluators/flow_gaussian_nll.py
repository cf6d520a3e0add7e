"""How close a flow's latents of real HQ images are to a standard gaussian (DLAS's `flownet_gaussian`)."""
import math
from typing import Any, Dict

import torch

from data import build_dataloader, build_dataset
from trainer.evaluators import EVALUATORS
from trainer.step import unwrap

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def standard_normal_logp(z: torch.Tensor) -> torch.Tensor:
    """Per-image log-density of z under N(0, I), summed over C, H, W."""
    return (-HALF_LOG_2PI - 0.5 * z.double() ** 2).flatten(1).sum(1)


@EVALUATORS.register("flownet_gaussian")
class FlowGaussianNLL:
    """`gaussian_diff` as DLAS computes it: for each latent level, the standard-normal log-density summed
    over the latent's elements and averaged over the batch; averaged over levels and batches, no log taken.
    Also per element (independent of image size), the NLL in bits/dim, and the share of elements beyond 3 sigma."""

    def __init__(self, name: str, opt_eval: Dict[str, Any], env: Dict[str, Any]):
        self.name, self.env = name, env
        self.net_name = opt_eval["for"]
        opt = env["opt"]
        ds = {**opt_eval["dataset"], "batch_size": opt_eval["batch_size"], "phase": "val"}
        self.loader = build_dataloader(build_dataset(ds, opt, "val"), ds, "val", opt["manual_seed"])

    @torch.no_grad()
    def evaluate(self, it: int, logger: Any = None) -> Dict[str, float]:
        net = self.env["networks"][self.net_name]
        was_training = net.training
        net.eval()
        level_sum = element_sum = nll_sum = 0.0
        levels = elements = beyond = images = 0
        try:
            for batch in self.loader:
                hq, lq = batch["hq"].to(self.env["device"]), batch["lq"].to(self.env["device"])
                epses, nll, _ = unwrap(net)(gt=hq, lr=lq, z=None, eps_std=None, reverse=False, epses=[],
                                            add_gt_noise=False)
                for z in epses:
                    logp = standard_normal_logp(z)
                    level_sum += float(logp.mean())
                    levels += 1
                    element_sum += float(logp.sum())
                    elements += z.numel()
                    beyond += int((z.abs() > 3).sum())
                nll_sum += float(nll.sum())
                images += hq.shape[0]
        finally:
            net.train(was_training)
        n = self.name
        return {f"{n}/gaussian_diff": level_sum / max(levels, 1),
                f"{n}/gaussian_diff_per_element": element_sum / max(elements, 1),
                f"{n}/nll_bpd": nll_sum / max(images, 1),
                f"{n}/beyond_3sigma": beyond / max(elements, 1)}
