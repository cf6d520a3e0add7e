"""Evaluators run on held-out data every `train.val_freq` iterations and return named numbers."""
import math
from typing import Any, Dict, List

from torch import nn

from models import lr_multiple
from trainer.context import RunContext
from data import DATASET_KEYS
from data.degradations import CORRUPTION_KEYS
from utils.recipe_keys import REQUIRED, STR_OR_LIST, TEXT, Key, Mapping, Variant, declare_section, recipe_rule
from utils.registry import Registry

EVALUATORS = Registry("evaluator")
EVALUATOR_KEYS = {  # of every `eval.evaluators.<name>`
    "for": Key(str, REQUIRED, "the network evaluated", names=("networks", "network")),
    "type": Key(str, REQUIRED, "the evaluator (see below)"),
    "batch_size": Key(int, 1, "images per batch", at_least=1),
    "eval_freq": Key(int, None, "accepted for DLAS's recipes; evaluators run every `train.val_freq`", at_least=1),
}
EVAL_DATASET_KEYS = {  # an evaluator's `dataset`
    "mode": Key(str, "imagefolder", "`imagefolder` as DLAS's evaluators read images, or any dataset mode"),
    "paths": Key(STR_OR_LIST, REQUIRED, "folder(s) of HQ images", path="dir", items=TEXT),
    "target_size": Key(int, None, "side the images are resized (imagefolder) or cropped to", at_least=1),
    **{key: DATASET_KEYS[key] for key in ("force_multiple", "scale", "n_workers", "quant", "cache")},
    "eval": Key(bool, True, "centred crops, no flips (no effect on imagefolder)"),
    "name": Key(str, "eval", "a name for the log", path="name"),
    "strict": Key(bool, True, "accepted for DLAS's recipes; no effect"),
    "use_flip": Key(bool, False, "no effect on imagefolder"), "use_rot": Key(bool, False, "no effect on imagefolder"),
    "max_images": Key(int, None, "evaluate on the first N images only (absent: all)", at_least=1),
    **CORRUPTION_KEYS,
}
declare_section("eval", {
    "evaluators": Mapping(Variant("type", EVALUATORS, EVALUATOR_KEYS), "evaluators by name, run every val_freq"),
    "output_state": Key(str, "gen", "the state key holding the SR image that validation scores"),
})


@recipe_rule(order=20)  # after the recipe's scale is settled
def fill_evaluator_scale(opt: dict) -> None:
    """An evaluator's dataset has the recipe's scale unless it gives its own."""
    for ev in opt["eval"]["evaluators"].values():
        if isinstance(ev.get("dataset"), dict) and ev["dataset"].get("scale") is None:
            ev["dataset"]["scale"] = opt["scale"]

from trainer.evaluators import flow_gaussian_nll, sr_metrics  # noqa: E402,F401  (fill the registry)


def build_evaluators(opt: Dict[str, Any], env: RunContext) -> List[Any]:
    """The SR-metrics evaluator for each `datasets.val*` section, then the recipe's `eval.evaluators`."""
    evaluators = []
    for name, ds in opt["datasets"].items():
        if ds["phase"] == "val":
            sr_net = sr_metrics.sr_network(opt)
            ds = fit_to_network(ds, env.networks[sr_net])
            evaluators.append(sr_metrics.SRMetrics(name, {"dataset": ds, "for": sr_net}, env))
    for name, opt_eval in opt["eval"]["evaluators"].items():
        if "dataset" in opt_eval:
            opt_eval = {**opt_eval, "dataset": fit_to_network(opt_eval["dataset"], env.networks[opt_eval["for"]])}
        evaluators.append(EVALUATORS.get(opt_eval["type"], f"eval.evaluators.{name}.type")(name, opt_eval, env))
    return evaluators


def fit_to_network(opt_dataset: Dict[str, Any], net: nn.Module) -> Dict[str, Any]:
    """The dataset options with `force_multiple` raised to a multiple of what `net` needs of the LR sides, so
    that whole images are trimmed to sizes it takes, and images too small for it are skipped with a warning
    when the dataset is built instead of stopping the run at its first validation."""
    have, need = opt_dataset.get("force_multiple") or 1, lr_multiple(net)
    return opt_dataset if have % need == 0 else {**opt_dataset, "force_multiple": math.lcm(have, need)}
