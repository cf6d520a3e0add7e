"""The generic training loop: owns networks, steps, evaluators and checkpoints; `fit()` runs the recipe."""
import contextlib
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn
from tqdm import tqdm

from data import build_dataloader, build_dataset
from models import build_network, is_flow, load_network_weights
from trainer import checkpoint
from trainer.ema import EMA
from trainer.injectors import active
from trainer.evaluators import build_evaluators
from trainer.logger import RunLogger
from trainer.schedulers import build_lr_factor
from trainer.step import Step, unwrap
from utils import dist
from utils.errors import ConfigError, TrainingStopped


def pick_device(opt: Dict[str, Any]) -> torch.device:
    if opt["gpu_ids"] and torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank() if opt["dist"] else opt["gpu_ids"][0])
    return torch.device("cpu")


def grad_scaler() -> Any:
    """fp16's loss scaler: torch.amp's since torch 2.3, torch.cuda.amp's before (requirements allow 2.2)."""
    amp = getattr(torch.amp, "GradScaler", None)
    return amp("cuda") if amp is not None else torch.cuda.amp.GradScaler()


class Trainer:
    def __init__(self, opt: Dict[str, Any], resume: Optional[str] = None):
        if not opt["steps"]:
            raise ConfigError("the recipe has no `steps`: nothing to train (a test recipe? use test.py)")
        self.opt = opt
        self.rank0 = dist.rank() == 0
        self.logger = RunLogger(opt, enabled=self.rank0)
        self.log = self.logger.log
        self.device = pick_device(opt)
        if opt["gpu_ids"] and self.device.type == "cpu":
            self.log.warning(f"gpu_ids {opt['gpu_ids']} asks for CUDA, which is not available: training on the CPU")
        torch.manual_seed(opt["manual_seed"] + dist.rank())
        self.resume_path = self._resume_path(resume)

        self.networks: Dict[str, nn.Module] = {}
        for name, opt_net in opt["networks"].items():
            net = build_network(opt_net, opt).to(self.device)
            weights = opt["path"].get(f"pretrain_model_{name}")
            if weights and not self.resume_path:
                load_network_weights(net, weights, strict=opt["path"]["strict_load"])
                self.log.info(f"loaded {name} weights from {weights}")
            self.networks[name] = net
        if opt["train"]["compile"]:
            self._compile()
        self.emas = {name: EMA(net, opt["train"]["ema_decay"]) for name, net in self.networks.items()
                     if opt["train"]["ema_decay"] > 0}
        self.env = {"opt": opt, "networks": self.networks, "device": self.device, "step": 0}
        self.steps = [Step(name, o, self.env) for name, o in opt["steps"].items()]
        self.lr_factor = build_lr_factor(opt["train"])

        self.amp_dtype = self._amp_dtype()
        self.scaler = grad_scaler() if self.amp_dtype == torch.float16 else None

        train_opt = opt["datasets"].get("train")
        if train_opt is None:
            raise ConfigError("the recipe has no `datasets.train` section")
        self.train_set = build_dataset(train_opt, opt, "train")
        self.train_loader = build_dataloader(self.train_set, train_opt, "train", opt["manual_seed"])
        self.evaluators = build_evaluators(opt, self.env)
        self.it, self.epoch, self.batch_in_epoch, self.nan_skips = 0, 0, 0, 0
        self.metrics_history: List[Dict[str, Any]] = []
        self.plateau: Dict[str, Any] = {"best": None, "stale": 0}  # auto_unfreeze's memory
        if self.resume_path:
            self._load_training_state(self.resume_path)
        else:
            self.it = max(opt["start_step"], 0)
        for name in self.networks:
            self._wrap(name)

    # ----------------------------------------------------------------------------------------- setup
    def _compile(self) -> None:
        """`train.compile`: torch.compile every network; where a part cannot be compiled it runs eagerly."""
        import torch._dynamo
        torch._dynamo.config.suppress_errors = True  # fall back to eager code instead of stopping
        for name, net in self.networks.items():
            try:
                net.compile()
                self.log.info(f"network `{name}` will be compiled by torch.compile on its first call")
            except Exception as e:  # e.g. no compiler toolchain on this machine
                self.log.warning(f"torch.compile is not available for `{name}` ({e}); training without it")

    def _resume_path(self, resume: Optional[str]) -> Optional[Path]:
        value = resume or self.opt["path"].get("resume_state")
        if not value:
            return None
        if value == "auto":
            found = checkpoint.find_resume_state(Path(self.opt["path"]["training_state"]))
            if found is None:
                self.log.info(f"--resume auto: no checkpoint in {self.opt['path']['training_state']}; starting fresh")
            return found
        if not Path(value).is_file():
            raise ConfigError(f"resume state `{value}` does not exist")
        return Path(value)

    def _amp_dtype(self) -> Optional[torch.dtype]:
        if not self.opt["fp16"]:
            return None
        if self.device.type != "cuda":
            self.log.warning("fp16: true needs CUDA; training in float32 on the CPU")
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _wrap(self, name: str) -> None:
        """Under torchrun, (re)wrap a network with trainable parameters in DistributedDataParallel."""
        net = unwrap(self.networks[name])
        if self.opt["dist"] and any(p.requires_grad for p in net.parameters()):
            # A trainable RRDB inside a flow has outputs (the HR branch) the NLL never reads: DDP must not
            # wait for their gradients. Frozen, it is outside DDP and every flow parameter gets one.
            find_unused = is_flow(net) and net.train_rrdb
            self.networks[name] = dist.wrap_ddp(net, self.device, find_unused=find_unused)

    # ------------------------------------------------------------------------------------ checkpoints
    def _load_training_state(self, path: Path) -> None:
        state = checkpoint.load_file(path)
        models = path.parent.parent / "models"
        for name, net in self.networks.items():
            file = state["model_files"].get(name)
            if file is None:
                raise ConfigError(f"checkpoint {path} has no weights for network `{name}`")
            load_network_weights(net, models / file, strict=True)
        for name, ema in self.emas.items():
            if name in state.get("ema", {}):
                ema.load_state_dict(state["ema"][name])
        self.env["step"] = self.it = state["iter"]
        for name in state.get("unfrozen", []):
            self.unfreeze(name, "", announce=False)
        self._apply_unfreeze_schedule(announce=False)
        for step in self.steps:
            if step.name in state["steps"]:
                step.load_state_dict(state["steps"][step.name])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.metrics_history = list(state.get("metrics_history", []))
        self.plateau = dict(state.get("plateau", self.plateau))
        rngs = state["rng"]  # one per process of the run that saved it
        checkpoint.set_rng_state(rngs[min(dist.rank(), len(rngs) - 1)])
        self._report_recipe_changes(state.get("opt"))
        self.log.info(f"resumed from {path} at iteration {self.it} (epoch {self.epoch})")

    def _report_recipe_changes(self, old: Optional[Dict[str, Any]]) -> None:
        if not old:
            return
        for line in _diff(old, self.opt, ""):
            self.log.info(f"recipe changed since the checkpoint: {line}")

    def save(self) -> None:
        rng = dist.gather(checkpoint.rng_state())  # every process takes part; only rank 0 writes
        if not self.rank0:
            return
        state = {
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "steps": {s.name: s.state_dict() for s in self.steps},
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng,
            "ema": {n: e.state_dict() for n, e in self.emas.items()},
            "metrics_history": self.metrics_history,
            "plateau": self.plateau,
            "unfrozen": [n for n, net in self.networks.items() if getattr(unwrap(net), "train_rrdb", False)],
            "opt": _plain(self.opt),
        }
        weights = {n: unwrap(net).state_dict() for n, net in self.networks.items()}
        weights.update({f"{n}_ema": e.state_dict() for n, e in self.emas.items()})
        path = checkpoint.save_checkpoint(self.opt["path"], self.it, weights, state,
                                          keep=self.opt["logger"]["keep_checkpoints"])
        self.log.info(f"saved checkpoint {path}")

    # ------------------------------------------------------------------------------------ freezing
    def _apply_unfreeze_schedule(self, announce: bool = True) -> None:
        """`train_RRDB_delay`: unfreeze the RRDB after that fraction of niter (official SRFlow behaviour)."""
        for name, opt_net in self.opt["networks"].items():
            delay = opt_net.get("train_RRDB_delay")
            if delay is not None and not opt_net.get("train_RRDB") and self.it >= delay * self.opt["train"]["niter"]:
                self.unfreeze(name, f"train_RRDB_delay {delay}", announce)

    def unfreeze(self, name: str, reason: str, announce: bool = True) -> None:
        net = unwrap(self.networks[name])
        if not hasattr(net, "set_train_rrdb") or getattr(net, "train_rrdb", True):
            return
        net.set_train_rrdb(True)
        self.opt["networks"][name]["train_RRDB"] = True
        self._wrap(name)
        added = sum(step.add_trainable_parameters() for step in self.steps if name in step.networks)
        if announce:
            self.log.info(f"iteration {self.it}: RRDB of `{name}` unfrozen ({reason}); {added} tensors added "
                          "to the optimizer")

    # -------------------------------------------------------------------------------------- the loop
    def batches(self) -> Iterator[Dict[str, Any]]:
        """Endless training batches; the position (epoch, batch) is part of the checkpoint."""
        while True:
            self.train_loader.sampler.set_epoch(self.epoch, start_index=self.batch_in_epoch * self.train_loader.batch_size)
            for batch in self.train_loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def fit(self) -> List[Dict[str, Any]]:
        """Train to `train.niter`, validating, logging and saving on the recipe's schedule."""
        opt_train, opt_log = self.opt["train"], self.opt["logger"]
        niter = opt_train["niter"]
        self.log.info(f"training `{self.opt['name']}` on {self.device} from iteration {self.it} to {niter}; "
                      f"batch size {self.opt['datasets']['train']['batch_size']} per process x {dist.world_size()} process(es)")
        bar = tqdm(total=niter, initial=self.it, disable=not self.rank0, dynamic_ncols=True, desc="train")
        sigint = _InterruptFlag()
        data = self.batches()
        timer = time.time()
        try:
            while self.it < niter and not sigint.raised:
                self.it += 1
                self.env["step"] = self.it
                self._apply_unfreeze_schedule()
                state = self.to_device(next(data))
                logs = self.train_step(state)
                bar.update(1)
                bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
                if self.it % opt_log["print_freq"] == 0:
                    rate = opt_log["print_freq"] / max(time.time() - timer, 1e-9)
                    timer = time.time()
                    lr = self.steps[0].optimizer.param_groups[0]["lr"]
                    self.log.info(f"iter {self.it:>7d} lr {lr:.3g} {rate:.2f} it/s " +
                                  " ".join(f"{k} {v:.4g}" for k, v in logs.items()))
                    self.logger.scalars({**logs, "lr": lr}, self.it, "train/")
                if self.it % opt_train["val_freq"] == 0 or self.it == niter:
                    self.validate()
                if self.it % opt_log["save_checkpoint_freq"] == 0 or self.it == niter:
                    self.save()
        finally:
            sigint.restore()
            bar.close()
        if sigint.raised:
            self.log.info(f"interrupted at iteration {self.it}: saving a checkpoint before exiting")
            self.save()
            raise KeyboardInterrupt
        if self.metrics_history and self.rank0:
            self.log.info("final validation: " + _psnr_summary(self.metrics_history[-1]))
        self.logger.close()
        return self.metrics_history

    def train_step(self, state: Dict[str, Any]) -> Dict[str, float]:
        logs: Dict[str, float] = {}
        factor = self.lr_factor(self.it)
        for step in self.steps:
            if not active(step.opt, self.it):
                continue
            step.set_lr(factor)
            result = step.run(state, self.it, self.opt["train"]["mega_batch_factor"], self.autocast,
                              self.scaler, dist.no_sync)
            logs.update(result["logs"])
            state.update(result["state"])
            if result["skipped"]:
                self.nan_skips += 1
                self.log.warning(f"iteration {self.it}: non-finite loss in step `{step.name}` "
                                 f"({result['logs']}); optimizer step skipped ({self.nan_skips} in a row)")
                if self.nan_skips > self.opt["train"]["max_nan_skips"]:
                    raise TrainingStopped(
                        f"{self.nan_skips} non-finite losses in a row at iteration {self.it}: stopping so the "
                        "weights stay as they were. Lower the learning rate, check the data, or resume from "
                        "the last checkpoint.")
            else:
                self.nan_skips = 0
        for name, ema in self.emas.items():
            ema.update(unwrap(self.networks[name]), self.it)
        self._save_visuals(state)
        return logs

    def _save_visuals(self, state: Dict[str, Any]) -> None:
        rate = self.opt["logger"]["visual_debug_rate"]
        if not self.rank0 or rate <= 0 or self.it % rate != 0:
            return
        from torchvision.utils import make_grid
        for key in self.opt["logger"]["visuals"]:
            value = state.get(key)
            if torch.is_tensor(value) and value.dim() == 4:
                self.logger.image(f"train_{key}", make_grid(value.detach().float().cpu()[:16], nrow=4), self.it)

    def validate(self) -> Dict[str, float]:
        """Run every evaluator with EMA weights when enabled; log and remember the numbers."""
        if not self.evaluators:
            return {}
        swapped = {name: ema.swap_into(unwrap(self.networks[name])) for name, ema in self.emas.items()}
        metrics: Dict[str, float] = {}
        try:
            for evaluator in self.evaluators:
                metrics.update(evaluator.evaluate(self.it, self.logger))
        finally:
            for name, original in swapped.items():
                self.emas[name].restore(unwrap(self.networks[name]), original)
        metrics = dist.reduce_metrics(metrics)
        if self.rank0:
            self.log.info(f"validation at iter {self.it}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            self.logger.scalars(metrics, self.it, "val/")
        self.metrics_history.append({"iter": self.it, **metrics})
        self._auto_unfreeze(metrics)
        return metrics

    def _auto_unfreeze(self, metrics: Dict[str, float]) -> None:
        """`train.auto_unfreeze`: unfreeze the RRDB once the watched metric stops improving."""
        rule = self.opt["train"].get("auto_unfreeze")
        key = next((k for k in metrics if k == rule["metric"] or k.endswith("/" + rule["metric"])), None) \
            if rule else None
        if key is None:
            return
        net = unwrap(self.networks[rule["network"]])
        if getattr(net, "train_rrdb", True):
            return
        value, best = metrics[key], self.plateau.get("best")
        lower_is_better = rule["mode"] == "min" or (rule["mode"] == "auto" and "nll" in rule["metric"].lower())
        gain = (best - value if lower_is_better else value - best) if best is not None else float("inf")
        if gain > rule["min_delta"]:
            self.plateau = {"best": value, "stale": 0}
        else:
            self.plateau["stale"] += 1
        if self.plateau["stale"] >= rule["patience"]:
            self.unfreeze(rule["network"], f"auto_unfreeze: {rule['metric']} did not improve by more than "
                                           f"{rule['min_delta']} for {rule['patience']} validations")


class _InterruptFlag:
    """Turns the first Ctrl-C into a flag so the loop can save a checkpoint and stop cleanly."""

    def __init__(self) -> None:
        self.raised = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self.previous = None

    def _handle(self, *_: Any) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _psnr_summary(metrics: Dict[str, Any]) -> str:
    """`val/psnr 27.1 dB vs bicubic 25.3 dB (+1.8)` for each validation set's PSNR figures."""
    parts = []
    for key, value in metrics.items():
        prefix, _, name = key.rpartition("/")
        base = metrics.get(f"{prefix}/psnr_bicubic")
        if name.startswith("psnr") and name != "psnr_bicubic" and base is not None:
            parts.append(f"{key} {value:.2f} dB vs bicubic {base:.2f} dB ({value - base:+.2f})")
    return "; ".join(parts) or ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "iter")


def _plain(value: Any) -> Any:
    """The recipe as plain Python types (safe for weights_only loading)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _diff(old: Any, new: Any, where: str) -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _diff(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
    elif _plain(old) != _plain(new):
        yield f"{where}: {old!r} -> {new!r}"
