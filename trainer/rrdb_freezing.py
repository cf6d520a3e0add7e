"""SRFlow's freeze policy: when the RRDB inside a flow stops being frozen (stage 2 -> stage 3).

- `train_RRDB: true`: trained from the start (the network is built that way).
- `train_RRDB_delay: d`: frozen for the first int(d * niter) iterations, trained from the next one on, as
  in the official SRFlow code.
- `train.auto_unfreeze: {metric, patience, min_delta, network, mode}`: unfrozen once the validation metric
  has not improved by more than min_delta for `patience` validations.

The trainer asks at two points, `at_iteration` and `after_validation`, and carries out what they return
(make the RRDB trainable, re-wrap DDP, add its parameters to the optimizers). The policy's memory is part of
the checkpoint. Under DDP, a trainable RRDB has outputs the NLL never reads (its HR branch): `find_unused`.
"""
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from models import is_flow
from utils.dist import unwrap
from utils.errors import ConfigError

Decision = Tuple[str, str]  # (network name, why it is unfrozen now)


def rrdb_frozen(net: nn.Module) -> bool:
    """Whether `net` is a flow whose RRDB is frozen."""
    net = unwrap(net)
    return is_flow(net) and not net.train_rrdb


def find_unused(net: nn.Module) -> bool:
    """DDP must not wait for gradients of a trainable RRDB's HR branch, which the flow never reads."""
    net = unwrap(net)
    return is_flow(net) and net.train_rrdb


class RRDBFreezing:
    def __init__(self, opt: Dict[str, Any], networks: Dict[str, nn.Module]):
        self.networks = networks
        self.niter = opt["train"]["niter"]
        # Whether each network was built with its RRDB trainable (the recipe's `train_RRDB`, read by the network)
        self.train_rrdb = {name: is_flow(net) and unwrap(net).train_rrdb for name, net in networks.items()}
        self.delays = {name: o["train_RRDB_delay"] for name, o in opt["networks"].items()
                       if o.get("train_RRDB_delay") is not None and not self.train_rrdb[name]}
        self.rule: Optional[Dict[str, Any]] = opt["train"].get("auto_unfreeze")
        self.plateau: Dict[str, Any] = {"best": None, "stale": 0}

    def at_iteration(self, it: int) -> List[Decision]:
        """Networks whose `train_RRDB_delay` has passed at iteration `it` (1-based)."""
        return [(name, f"train_RRDB_delay {delay}") for name, delay in self.delays.items()
                if rrdb_frozen(self.networks[name]) and it > int(delay * self.niter)]

    def after_validation(self, metrics: Dict[str, float]) -> List[Decision]:
        """`train.auto_unfreeze`: the network to unfreeze once the watched metric stops improving."""
        rule = self.rule
        key = next((k for k in metrics if k == rule["metric"] or k.endswith("/" + rule["metric"])), None) \
            if rule else None
        if key is None or not rrdb_frozen(self.networks[rule["network"]]):
            return []
        value, best = metrics[key], self.plateau["best"]
        lower_is_better = rule["mode"] == "min" or (rule["mode"] == "auto" and "nll" in rule["metric"].lower())
        gain = (best - value if lower_is_better else value - best) if best is not None else float("inf")
        if gain > rule["min_delta"]:
            self.plateau = {"best": value, "stale": 0}
        else:
            self.plateau["stale"] += 1
        if self.plateau["stale"] < rule["patience"]:
            return []
        return [(rule["network"], f"auto_unfreeze: {rule['metric']} did not improve by more than "
                                  f"{rule['min_delta']} for {rule['patience']} validations")]

    @staticmethod
    def unfreeze(net: nn.Module) -> bool:
        """Make the flow's RRDB trainable; False when there is nothing to unfreeze."""
        if not rrdb_frozen(net):
            return False
        unwrap(net).set_train_rrdb(True)
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {"plateau": self.plateau,
                "unfrozen": [n for n, net in self.networks.items() if is_flow(unwrap(net)) and unwrap(net).train_rrdb]}

    def resumed(self, state: Dict[str, Any], it: int) -> List[str]:
        """Load the policy's memory; returns the networks the checkpoint trains jointly, which a resumed
        recipe may not freeze again."""
        self.plateau = dict(state.get("plateau") or self.plateau)
        unfrozen = list(state.get("unfrozen", []))
        for name in unfrozen:
            if not (self.train_rrdb.get(name) or (self.rule or {}).get("network") == name
                    or (name in self.delays and it > int(self.delays[name] * self.niter))):
                raise ConfigError(f"`networks.{name}.train_RRDB` is false, but the checkpoint at iteration {it} "
                                  "already trains the RRDB; a resumed run cannot freeze it again (set it to true)")
        return unfrozen
