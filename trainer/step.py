"""One optimisation step: injectors -> losses -> backward (with accumulation) -> optimizer."""
import contextlib
import math
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from trainer.context import RunContext
from trainer.injectors import INJECTOR_KEYS, INJECTORS, SCHEDULE_KEYS, active, build_injectors
from trainer.losses import LOSS_KEYS, LOSSES, build_losses
from models import is_flow
from utils.dist import unwrap
from utils.errors import ConfigError
from utils.options import as_list
from utils.recipe_keys import (FRACTION, NUM, REQUIRED, STR_OR_LIST, TEXT, Key, Mapping, Variant, declare_section,
                               recipe_rule)

OPTIMIZER_KEYS = {
    "lr": Key(NUM, 1e-4, "learning rate", above=0),
    "weight_decay": Key(NUM, 0, "Adam's weight decay", at_least=0),
    "beta1": Key(NUM, 0.9, "Adam's beta1", **FRACTION), "beta2": Key(NUM, 0.99, "Adam's beta2", **FRACTION),
    "eps": Key(NUM, 1e-8, "Adam's eps", above=0),
    "lr_RRDB": Key(NUM, None, "SRFlow's RRDB's learning rate once it trains (default: `lr`)", above=0),
}
# Older DLAS recipes (its ESRGAN ones) set these on the step itself; they win over `optimizer_params`'s.
STEP_LEVEL_OPTIMIZER_KEYS = ("lr", "weight_decay", "beta1", "beta2")
STEP_KEYS = {  # a recipe's `steps.<name>`
    "training": Key(STR_OR_LIST, REQUIRED, "the network(s) this step's optimizer updates", items=TEXT,
                    names=("networks", "network")),
    "optimizer": Key(str, "adam", "adam or adamw"),
    "optimizer_params": OPTIMIZER_KEYS,
    **{key: Key(NUM, None, f"as `optimizer_params.{key}`, which it overrides (DLAS's older recipes)",
                at_least=OPTIMIZER_KEYS[key].at_least, above=OPTIMIZER_KEYS[key].above,
                below=OPTIMIZER_KEYS[key].below, fill=False)
       for key in STEP_LEVEL_OPTIMIZER_KEYS},
    "injectors": Mapping(Variant("type", INJECTORS, INJECTOR_KEYS), "injectors by name, run in order"),
    "losses": Mapping(Variant("type", LOSSES, LOSS_KEYS), "losses by name, summed by weight"),
    "clip_grad_norm": Key(NUM, None, "clip the gradient norm of the step's parameters (0 or absent: no clipping)",
                          at_least=0),
    **SCHEDULE_KEYS,
}
declare_section("steps", Mapping(STEP_KEYS, "optimisation steps by name, run in order each iteration"))


@recipe_rule(order=15)
def step_level_optimizer_keys(opt: Dict[str, Any]) -> None:
    """A step's own `lr`, `weight_decay`, `beta1`, `beta2` move into its `optimizer_params`."""
    for step in opt["steps"].values():
        for key in STEP_LEVEL_OPTIMIZER_KEYS:
            if key in step:
                step["optimizer_params"][key] = step.pop(key)


def split_batch(state: Dict[str, Any], parts: int) -> List[Dict[str, Any]]:
    """Split every batched tensor of `state` into `parts` chunks for gradient accumulation."""
    if parts <= 1:
        return [dict(state)]
    size = next(v.shape[0] for v in state.values() if torch.is_tensor(v) and v.dim() > 0)
    if size < parts:
        raise ConfigError(f"train.mega_batch_factor ({parts}) is larger than the batch size ({size})")
    chunks: List[Dict[str, Any]] = [{} for _ in range(parts)]
    for key, value in state.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == size:
            pieces = value.chunk(parts)
        elif isinstance(value, list) and len(value) == size:
            step = math.ceil(size / parts)
            pieces = [value[i:i + step] for i in range(0, size, step)]
        else:
            pieces = [value] * parts
        for chunk, piece in zip(chunks, pieces):
            chunk[key] = piece
    return chunks


def join_chunks(chunks: List[Dict[str, Any]], known: Iterable[str]) -> Dict[str, Any]:
    """What the step's injectors and losses added to the state (keys not in `known`), detached, with the
    accumulation chunks' tensors put back into one batch: what later steps and the visuals read."""
    added: Dict[str, Any] = {}
    for key in [k for k in chunks[-1] if k not in set(known)]:
        values = [c[key] for c in chunks if key in c]
        if all(torch.is_tensor(v) and v.dim() > 0 for v in values):
            added[key] = torch.cat([v.detach() for v in values]) if len(values) > 1 else values[0].detach()
        else:
            added[key] = values[-1].detach() if torch.is_tensor(values[-1]) else values[-1]
    return added


@contextlib.contextmanager
def frozen(networks: Iterable[nn.Module]) -> Iterator[None]:
    """Networks that a step does not train get no gradient from its losses (a discriminator that a generator's
    GAN loss goes through): their parameters stop requiring gradients until the step's backward is done."""
    params = [p for net in networks for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class StepResult(NamedTuple):
    logs: Dict[str, float]  # `<step>/<loss>` values (and grad_norm when clipping), averaged over chunks
    state: Dict[str, Any]  # what the step added to the state, detached, all chunks together
    skipped: bool  # a loss was not finite: no optimizer step


class Step:
    """A recipe `steps.<name>` section: which networks it trains, its injectors, losses and optimizer."""

    def __init__(self, name: str, opt: Dict[str, Any], env: RunContext):
        self.name, self.opt, self.env = name, opt, env
        self.networks = as_list(opt["training"])
        # `<network>.<parameter>` names of the SRFlow RRDBs this step trains: their lr is `lr_RRDB`
        self.rrdb_names = {f"{net}.{p}" for net in self.networks if is_flow(env.networks[net])
                           for p in unwrap(env.networks[net]).rrdb_parameter_names()}
        self.injectors = build_injectors(opt["injectors"], env, f"steps.{name}.injectors")
        self.losses = build_losses(opt["losses"], env, f"steps.{name}.losses")
        for loss in self.losses:
            loss.step_networks = self.networks  # e.g. discriminator_gan's network: the one its step trains
        self._mark_injectors_feeding_losses()
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.param_names: List[List[str]] = []  # names per optimizer group, so a resume can rebuild the groups
        self._gradless_reported: set = set()
        self.add_trainable_parameters()

    def _mark_injectors_feeding_losses(self) -> None:
        """Walk back from the keys the losses read to find which injectors' outputs need gradients."""
        needed = {v for loss in self.losses for v in loss.opt.values() if isinstance(v, str)}
        for injector in reversed(self.injectors):
            injector.feeds_loss = bool(set(as_list(injector.opt.get("out"))) & needed)
            if injector.feeds_loss:
                needed |= {k for k in as_list(injector.opt.get("in")) if isinstance(k, str)}

    def named_parameters(self, trainable_only: bool) -> Iterator[Tuple[str, nn.Parameter]]:
        for net_name in self.networks:
            for pname, p in unwrap(self.env.networks[net_name]).named_parameters():
                if p.requires_grad or not trainable_only:
                    yield f"{net_name}.{pname}", p

    def add_trainable_parameters(self) -> int:
        """Put parameters that became trainable (e.g. an unfrozen RRDB) into new optimizer groups, keeping
        the state of the ones already there. SRFlow's RRDB gets a group of its own (its lr is `lr_RRDB`).
        Returns how many tensors were added."""
        known = {n for group in self.param_names for n in group}
        new = [(n, p) for n, p in self.named_parameters(trainable_only=True) if n not in known]
        for in_rrdb in (False, True):
            part = [(n, p) for n, p in new if (n in self.rrdb_names) == in_rrdb]
            if part:
                self._add_group([n for n, _ in part], [p for _, p in part])
        return len(new)

    def base_lr(self, names: List[str]) -> float:
        """The recipe's learning rate for a group: `lr_RRDB` for SRFlow's RRDB (official SRFlow's option;
        in the step's optimizer_params or under `train`), `lr` for everything else."""
        o, train = self.opt["optimizer_params"], self.env.opt["train"]
        if names and all(n in self.rrdb_names for n in names):
            for value in (o.get("lr_RRDB"), train.get("lr_RRDB")):
                if value is not None:
                    return value
        return o["lr"]

    def _add_group(self, names: List[str], params: List[nn.Parameter]) -> None:
        group = {"params": params, "initial_lr": self.base_lr(names), "lr": self.base_lr(names)}
        if self.optimizer is None:
            kind = self.opt["optimizer"].lower()
            if kind not in ("adam", "adamw"):
                raise ConfigError(f"steps.{self.name}.optimizer: `{self.opt['optimizer']}` is not supported; "
                                  "known: adam, adamw")
            self.optimizer = (torch.optim.AdamW if kind == "adamw" else torch.optim.Adam)([group])
        else:
            self.optimizer.add_param_group(group)
        self.param_names.append(names)
        self.apply_hyperparameters()

    def apply_hyperparameters(self) -> None:
        """The recipe's optimizer settings on every group. Loading a saved optimizer brings back the
        settings it was saved with; this makes a recipe changed on resume take effect."""
        o = self.opt["optimizer_params"]
        for group, names in zip(self.optimizer.param_groups, self.param_names):
            group.update(initial_lr=self.base_lr(names), betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                         weight_decay=o["weight_decay"])

    def set_lr(self, schedule: Callable[[int, float], float], it: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = schedule(it, group["initial_lr"])

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "param_names": self.param_names}

    def load_state_dict(self, saved: Dict[str, Any]) -> None:
        """Rebuild the saved groups by parameter name, load their state, then add what became trainable."""
        by_name = dict(self.named_parameters(trainable_only=False))
        missing = [n for group in saved["param_names"] for n in group if n not in by_name]
        if missing:
            raise ConfigError(f"the saved optimizer of step `{self.name}` has parameters this network lacks "
                              f"(first: {missing[:3]}); the recipe's network changed since the checkpoint")
        self.optimizer, self.param_names = None, []
        for names in saved["param_names"]:
            self._add_group(names, [by_name[n] for n in names])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.apply_hyperparameters()
        self.add_trainable_parameters()

    def _report_gradless(self, terms: List[Tuple[str, torch.Tensor]]) -> None:
        """Warn once per loss that trains nothing: its inputs were computed without gradients (e.g. SRFlow's
        reverse pass without `reverse_with_grad`), so its weight has no effect."""
        if not torch.is_grad_enabled():
            return
        for name, term in terms:
            if not term.requires_grad and name not in self._gradless_reported:
                self._gradless_reported.add(name)
                warnings.warn(f"steps.{self.name}.losses.{name} receives no gradient: what it reads was computed "
                              f"without gradients, so it trains nothing (an SRFlow reverse pass keeps them only "
                              f"with reverse_with_grad, its 7th argument: in: [None, lq, None, 0, True, None, True])",
                              RuntimeWarning)

    def run(self, state: Dict[str, Any], it: int, parts: int, autocast: Callable[[], Any],
            scaler: Optional[Any], sync: Callable[[nn.Module, bool], Any]) -> StepResult:
        """Forward/backward over `parts` accumulation chunks, then one optimizer step unless a loss is not
        finite. Returns the logged numbers and the last chunk's state (for visuals)."""
        logs: Dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        finite, chunks = True, split_batch(state, parts)
        others = [unwrap(net) for name, net in self.env.networks.items() if name not in self.networks]
        for i, chunk in enumerate(chunks):
            last = i == parts - 1
            with contextlib.ExitStack() as stack:
                for net_name in self.networks:
                    stack.enter_context(sync(self.env.networks[net_name], last))
                stack.enter_context(frozen(others))
                with autocast():
                    for injector in self.injectors:
                        if active(injector.opt, it):
                            chunk.update(injector(chunk))
                    terms = [(loss.name, loss.weight * loss(chunk)) for loss in self.losses if active(loss.opt, it)]
                if not terms:
                    return StepResult(logs, join_chunks(chunks[:i + 1], state), False)
                self._report_gradless(terms)
                total = sum(t for _, t in terms)
                for name, term in terms:
                    logs[f"{self.name}/{name}"] = logs.get(f"{self.name}/{name}", 0.0) + term.item() / parts
                if not torch.isfinite(total):
                    finite = False
                    break
                total = total / parts
                (scaler.scale(total) if scaler else total).backward()
        added = join_chunks(chunks[:i + 1], state)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(logs, added, True)
        clip = self.opt.get("clip_grad_norm")
        if scaler:
            scaler.unscale_(self.optimizer)
        if clip:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            logs[f"{self.name}/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if scaler:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        return StepResult(logs, added, False)
