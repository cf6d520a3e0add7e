"""Evaluators run on held-out data every `train.val_freq` iterations and return named numbers."""
from typing import Any, Dict, List

from utils.registry import Registry

EVALUATORS = Registry("evaluator")

from trainer.evaluators import flow_gaussian_nll, sr_metrics  # noqa: E402,F401  (fill the registry)


def build_evaluators(opt: Dict[str, Any], env: Dict[str, Any]) -> List[Any]:
    """The SR-metrics evaluator for each `datasets.val*` section, then the recipe's `eval.evaluators`."""
    evaluators = []
    for name, ds in opt["datasets"].items():
        if ds["phase"] == "val":
            evaluators.append(sr_metrics.SRMetrics(name, {"dataset": ds, "for": sr_metrics.sr_network(opt)}, env))
    for name, opt_eval in opt["eval"]["evaluators"].items():
        evaluators.append(EVALUATORS.get(opt_eval["type"], f"eval.evaluators.{name}.type")(name, opt_eval, env))
    return evaluators
