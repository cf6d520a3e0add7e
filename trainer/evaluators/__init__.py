"""Evaluators run on held-out data every `train.val_freq` iterations and return named numbers."""
import math
from typing import Any, Dict, List

from torch import nn

from models import lr_multiple
from trainer.context import RunContext
from utils.registry import Registry

EVALUATORS = Registry("evaluator")

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
