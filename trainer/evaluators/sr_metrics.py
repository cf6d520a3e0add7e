"""Y-PSNR/SSIM and LR-PSNR of the generator on a validation set, beside bicubic; SRFlow is scored per
temperature. Images too small for SSIM are found when the evaluator is built and left out with a warning."""
import warnings
from typing import Any, Dict, List

import torch

from data import build_dataloader, build_dataset
from data.image_folder import image_size, warn_skip
from data.imresize import imresize
from data.lr_consistency import lr_psnr
from models import is_flow
from trainer.context import RunContext
from trainer.evaluators import EVAL_DATASET_KEYS, EVALUATORS
from trainer.injectors import build_injectors
from trainer.state_keys import injector_outputs
from utils.dist import unwrap
from utils.errors import ConfigError, closest
from utils.image import to_uint8
from utils.metrics import SSIM_Y_WINDOW, psnr_y, ssim_y, ssim_y_fits
from utils.options import MAX_SAMPLES, as_list, check_temperatures
from utils.recipe_keys import Key, declare_section

VISUAL_IMAGES = 2  # validation images saved as grids each time

declare_section("val", {  # the PSNR/SSIM validation of each `datasets.val*`
    "heats": Key(list, [0.0, 0.8], "temperatures of SRFlow's validation samples", check=check_temperatures),
    "samples": Key(int, 2, "SRFlow samples per temperature above 0", at_least=1, below=MAX_SAMPLES + 1),
    "max_images": Key(int, None, "validate on the first N images only (absent: all)", at_least=1),
})


def sr_network(opt: Dict[str, Any]) -> str:
    """The network whose output is validated: the one writing `eval.output_state`, else the first one."""
    for step in opt["steps"].values():
        for inj in step["injectors"].values():
            if opt["eval"]["output_state"] in as_list(inj.get("out")) and inj.get("generator"):
                return inj["generator"]
    return next(iter(opt["networks"]))


@EVALUATORS.register("sr_metrics", keys={"dataset": EVAL_DATASET_KEYS})
class SRMetrics:
    def __init__(self, name: str, opt_eval: Dict[str, Any], env: RunContext):
        self.name, self.env, opt = name, env, env.opt
        self.net_name = opt_eval["for"]
        self.scale = opt["scale"]
        dataset = build_dataset(opt_eval["dataset"], opt, "val")
        self.loader = build_dataloader(dataset, opt_eval["dataset"], "val", opt["manual_seed"])
        self.temperatures = [float(t) for t in opt["val"]["heats"]]
        self.samples = opt["val"]["samples"]
        self.max_images = opt["val"]["max_images"]
        self.injectors = [inj for name, step in opt["steps"].items()
                          for inj in build_injectors(step["injectors"], env, f"steps.{name}.injectors")]
        self.check_output_state(opt, env)
        self.check_sizes(dataset, opt_eval["dataset"])

    def check_output_state(self, opt: Dict[str, Any], env: RunContext) -> None:
        """A plain SR network is validated on what the injector writing `eval.output_state` gives: one must
        write it (an SRFlow is validated by sampling, whatever the key)."""
        if is_flow(env.networks[self.net_name]):
            return
        target, outs = opt["eval"]["output_state"], injector_outputs(opt)
        if target not in outs:
            raise ConfigError(f"`eval.output_state` is `{target}`, which no injector writes{closest(target, outs)}; "
                              f"validation needs the SR image's key: one of {', '.join(outs) or '(no injector)'}")

    def check_sizes(self, dataset: Any, opt_dataset: Dict[str, Any]) -> None:
        """Warn now about each validated image too small for SSIM-Y after the border crop (validation leaves
        it out); all of them too small is an error. Sizes come from the file headers, trimmed as the dataset
        trims them (to target_size, or to multiples of scale * force_multiple)."""
        files = [hq for hq, _ in dataset.pairs] if hasattr(dataset, "pairs") else list(dataset.files)
        files = files[:self.max_images] if self.max_images else files
        step = self.scale * (opt_dataset.get("force_multiple") or 1)
        small = 0
        for path in files:
            if path is None:
                continue
            h, w = (opt_dataset["target_size"],) * 2 if opt_dataset.get("target_size") else image_size(path)
            h, w = h - h % step, w - w % step
            if not ssim_y_fits(h, w, self.scale):
                small += 1
                warn_skip(path, f"validation leaves it out: {h}x{w} (as validated) is too small for SSIM "
                                f"({SSIM_Y_WINDOW} pixels a side after cropping the {self.scale}-pixel border)")
        if files and small == len(files):
            need = SSIM_Y_WINDOW + 2 * self.scale
            raise ConfigError(f"`datasets.{self.name}`: every validation image is smaller than SSIM needs "
                              f"({need}x{need} at scale {self.scale}): validate on larger images")

    def outputs(self, net: torch.nn.Module, lq: torch.Tensor, hq: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        """Named SR outputs (a list of samples each) for one batch."""
        if not is_flow(net):
            return {"": [self.run_injectors(lq, hq).clamp(0, 1)]}
        # The RRDB's own SR only while it is frozen: trained with the flow, its HR head is trained by no loss.
        frozen = not unwrap(net).train_rrdb
        lr_enc = unwrap(net).rrdb_preprocessing(lq, with_out=frozen)  # one RRDB pass for all samples
        out: Dict[str, List[torch.Tensor]] = {"_rrdb": [lr_enc[1].clamp(0, 1)]} if frozen else {}
        for t in self.temperatures:
            runs = [net(lr=lq, z=None, eps_std=t, reverse=True, lr_enc=lr_enc)[0]
                    for _ in range(1 if t == 0 else self.samples)]
            out[f"_t{t:g}"] = [as_image(r, f"{self.name} t={t:g}") for r in runs]
        return out

    def run_injectors(self, lq: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
        """DLAS's rule: run the injectors, every one of them, until `eval.output_state` is produced."""
        target = self.env.opt["eval"]["output_state"]
        state: Dict[str, Any] = {"lq": lq, "hq": hq}
        self.env.training = False
        try:
            for injector in self.injectors:
                state.update(injector(state))
                if target in state:
                    return state[target]
        finally:
            self.env.training = True
        raise KeyError(f"no injector produces eval.output_state `{target}`")

    @torch.no_grad()
    def evaluate(self, it: int, logger: Any) -> Dict[str, float]:
        net = self.env.networks[self.net_name]
        was_training = net.training
        net.eval()
        sums: Dict[str, float] = {}
        count = 0
        try:
            for i, batch in enumerate(self.loader):
                if self.max_images and i >= self.max_images:
                    break
                hq = batch["hq"].to(self.env.device)
                if not ssim_y_fits(*hq.shape[-2:], self.scale):  # warned about when built
                    warn_skip(batch["hq_path"][0], "validation leaves it out: it is too small for SSIM")
                    continue
                lq = batch["lq"].to(self.env.device)
                bicubic = imresize(lq, scale=self.scale).clamp(0, 1)
                outputs = {"_bicubic": [bicubic], **self.outputs(net, lq, hq)}
                self.score(outputs, hq, sums)
                count += hq.shape[0]
                if i < VISUAL_IMAGES:
                    from torchvision.utils import make_grid  # torchvision's import costs every start ~2 s
                    row = [bicubic[0]] + [s[0] for k, v in outputs.items() if k != "_bicubic" for s in v]
                    logger.image(f"val_{self.name}_{i}", make_grid(torch.stack(row + [hq[0]]).float().cpu(),
                                                                  nrow=len(row) + 1, padding=2), it)
        finally:
            net.train(was_training)
        return {f"{self.name}/{k}": v / max(count, 1) for k, v in sums.items()}


    def score(self, outputs: Dict[str, List[torch.Tensor]], hq: torch.Tensor, sums: Dict[str, float]) -> None:
        """Add each output's PSNR, SSIM and LR-PSNR (means over its samples) and the spread of its samples."""
        for b in range(hq.shape[0]):
            target = to_uint8(hq[b])
            for key, samples in outputs.items():
                images = [to_uint8(s[b]) for s in samples]
                for metric, fn in (("psnr", psnr_y), ("ssim", ssim_y)):
                    _add(sums, f"{metric}{key}", sum(fn(img, target, self.scale) for img in images) / len(images))
                _add(sums, f"lr_psnr{key}", sum(lr_psnr(img, target, self.scale) for img in images) / len(images))
                if len(samples) > 1:
                    _add(sums, f"diversity{key}", float(torch.stack([s[b] for s in samples]).std(0).mean()))


def as_image(sr: torch.Tensor, where: str) -> torch.Tensor:
    """SRFlow's output as an image in [0, 1]. A sample far out of distribution can overshoot wildly, and a
    diverged reverse flow gives inf or NaN: validation scores those values as 0 (NaN, -inf) and 1 (+inf),
    and says so (test.py and the playground retry at lower temperatures instead: inference/sr.py)."""
    bad = int((~torch.isfinite(sr)).sum())
    if bad:
        warnings.warn(f"validation {where}: {bad} non-finite values of {sr.numel()} scored as 0 (NaN, -inf) or "
                      "1 (+inf)", RuntimeWarning, stacklevel=2)
        sr = torch.nan_to_num(sr, nan=0.0, posinf=1.0, neginf=0.0)
    return sr.clamp(0, 1)


def _add(sums: Dict[str, float], key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)
