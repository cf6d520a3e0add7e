"""Y-PSNR/SSIM of the generator on a validation set, beside bicubic; SRFlow is scored per temperature."""
from typing import Any, Dict, List

import torch
from torchvision.utils import make_grid

from data import build_dataloader, build_dataset
from data.imresize import imresize
from models import is_flow
from trainer.injectors import as_list, build_injectors
from trainer.step import unwrap
from trainer.evaluators import EVALUATORS
from utils.metrics import psnr_y, ssim_y

VISUAL_IMAGES = 2  # validation images saved as grids each time


def sr_network(opt: Dict[str, Any]) -> str:
    """The network whose output is validated: the one writing `eval.output_state`, else the first one."""
    for step in opt["steps"].values():
        for inj in step["injectors"].values():
            if opt["eval"]["output_state"] in as_list(inj.get("out")) and inj.get("generator"):
                return inj["generator"]
    return next(iter(opt["networks"]))


@EVALUATORS.register("sr_metrics")
class SRMetrics:
    def __init__(self, name: str, opt_eval: Dict[str, Any], env: Dict[str, Any]):
        self.name, self.env, opt = name, env, env["opt"]
        self.net_name = opt_eval["for"]
        self.scale = opt["scale"]
        dataset = build_dataset(opt_eval["dataset"], opt, "val")
        self.loader = build_dataloader(dataset, opt_eval["dataset"], "val", opt["manual_seed"])
        self.heats = [float(t) for t in opt["val"]["heats"]]
        self.samples = opt["val"]["samples"]
        self.max_images = opt["val"]["max_images"]
        self.injectors = [inj for name, step in opt["steps"].items()
                          for inj in build_injectors(step["injectors"], env, f"steps.{name}.injectors")]

    def outputs(self, net: torch.nn.Module, lq: torch.Tensor, hq: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        """Named SR outputs (a list of samples each) for one batch."""
        if not is_flow(net):
            return {"": [self.run_injectors(lq, hq).clamp(0, 1)]}
        lr_enc = unwrap(net).rrdb_preprocessing(lq, with_out=True)  # one RRDB pass for all samples
        out: Dict[str, List[torch.Tensor]] = {"_rrdb": [lr_enc[1].clamp(0, 1)]}
        for t in self.heats:
            runs = [net(lr=lq, z=None, eps_std=t, reverse=True, lr_enc=lr_enc)[0]
                    for _ in range(1 if t == 0 else self.samples)]
            # A sample far out of distribution can overshoot wildly; images live in [0, 1].
            out[f"_t{t:g}"] = [r.clamp(0, 1) for r in runs]
        return out

    def run_injectors(self, lq: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        """DLAS's rule: run the injectors, every one of them, until `eval.output_state` is produced."""
        target = self.env["opt"]["eval"]["output_state"]
        state: Dict[str, Any] = {"lq": lq, "hq": hq}
        for injector in self.injectors:
            state.update(injector(state))
            if target in state:
                return state[target]
        raise KeyError(f"no injector produces eval.output_state `{target}`")

    @torch.no_grad()
    def evaluate(self, it: int, logger: Any) -> Dict[str, float]:
        net = self.env["networks"][self.net_name]
        was_training = net.training
        net.eval()
        sums: Dict[str, float] = {}
        count = 0
        try:
            for i, batch in enumerate(self.loader):
                if self.max_images and i >= self.max_images:
                    break
                hq = batch["hq"].to(self.env["device"])
                lq = batch["lq"].to(self.env["device"])
                bicubic = imresize(lq, scale=self.scale).clamp(0, 1)
                outputs = {"_bicubic": [bicubic], **self.outputs(net, lq, hq)}
                for key, samples in outputs.items():
                    for b in range(hq.shape[0]):
                        psnrs = [psnr_y(s[b], hq[b], self.scale) for s in samples]
                        ssims = [ssim_y(s[b], hq[b], self.scale) for s in samples]
                        _add(sums, f"psnr{key}", sum(psnrs) / len(psnrs))
                        _add(sums, f"ssim{key}", sum(ssims) / len(ssims))
                        if len(samples) > 1:
                            _add(sums, f"diversity{key}", float(torch.stack([s[b] for s in samples]).std(0).mean()))
                count += hq.shape[0]
                if i < VISUAL_IMAGES:
                    row = [bicubic[0]] + [s[0] for k, v in outputs.items() if k != "_bicubic" for s in v]
                    logger.image(f"val_{self.name}_{i}", make_grid(torch.stack(row + [hq[0]]).float().cpu(),
                                                                  nrow=len(row) + 1, padding=2), it)
        finally:
            net.train(was_training)
        return {f"{self.name}/{k}": v / max(count, 1) for k, v in sums.items()}


def _add(sums: Dict[str, float], key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)
