"""The generic training loop: owns networks, steps, evaluators and checkpoints; `fit()` runs the recipe."""
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn
from tqdm import tqdm

from data import build_dataloader, build_dataset
from models import build_network, load_network_weights
from models.recipe_section import recorded_section
from trainer import checkpoint, recipe_changes, run_folder
from trainer.context import RunContext
from trainer.ema import EMA
from trainer.injectors import active
from trainer.evaluators import build_evaluators
from trainer.logger import RunLogger
from trainer.rrdb_freezing import RRDBFreezing, find_unused
from trainer.schedulers import build_lr_schedule
from trainer.state_keys import check_state_keys
from trainer.step import Step
from trainer.stop_signals import StopSignals
from trainer.training_state import TrainingState
from utils import dist, precision
from utils.dist import unwrap
from utils.errors import ConfigError, DataError, TrainingInterrupted, TrainingStopped


def grad_scaler() -> Any:
    """fp16's loss scaler: torch.amp's since torch 2.3, torch.cuda.amp's before (requirements allow 2.2)."""
    amp = getattr(torch.amp, "GradScaler", None)
    return amp("cuda") if amp is not None else torch.cuda.amp.GradScaler()


class Trainer:
    """Builds a run from a parsed recipe; `fit()` trains it. The run owns its experiment folder (see
    trainer/run_folder.py): `fresh` moves an earlier run's folder aside instead of refusing to start."""

    def __init__(self, opt: Dict[str, Any], resume: Optional[str] = None, fresh: bool = False):
        if not opt["steps"]:
            raise ConfigError("the recipe has no `steps`: nothing to train (a test recipe? use test.py)")
        if fresh and resume:
            raise ConfigError("--fresh (start afresh) and --resume (continue) exclude each other; choose one")
        check_state_keys(opt)
        self.opt = opt
        self.rank0 = dist.rank() == 0
        self.root = Path(opt["path"]["experiments_root"])
        self.lock = run_folder.FolderLock(self.root).acquire() if self.rank0 else None
        try:
            self.logger = RunLogger(opt, enabled=self.rank0)
            self.log = self.logger.log
            self._build(resume, fresh)
        except BaseException:
            self.close()
            raise
        # What the folder holds before this run writes anything: a fresh start that fails before its first
        # iteration removes what it wrote since (its log), so that it never blocks the corrected command.
        self.paths_before = set(self.root.rglob("*")) if self.lock and not self.resume_path else None
        self.logger.open_files()

    def _build(self, resume: Optional[str], fresh: bool) -> None:
        opt = self.opt
        self.lr_schedule = build_lr_schedule(opt["train"])
        self.device = dist.pick_device(opt)
        if opt["gpu_ids"] and self.device.type == "cpu":
            self.log.warning(f"gpu_ids {opt['gpu_ids']} asks for CUDA, which is not available: training on the CPU")
        torch.manual_seed(opt["manual_seed"] + dist.rank())
        self.resume_path = self._resume_path(resume)
        resume_state = checkpoint.load_training_state(self.resume_path) if self.resume_path else None
        changes = recipe_changes.review(resume_state.opt, opt) if resume_state else []  # refusals first
        if resume_state is None and self.lock:
            # `--resume auto` with nothing to resume (a run stopped before its first checkpoint) starts afresh
            # too: what that run left is moved aside, not written over.
            archived = run_folder.make_room(self.lock, fresh or resume == "auto")
            if archived:
                why = "--fresh" if fresh else "no checkpoint to resume"
                self.log.info(f"the earlier files in {self.root} ({why}) were moved to {archived}")

        self.networks: Dict[str, nn.Module] = {}
        for name, opt_net in opt["networks"].items():
            net = build_network(opt_net, opt).to(self.device)
            weights = opt["path"].get(f"pretrain_model_{name}")
            if weights and resume_state is None:
                load_network_weights(net, weights, strict=opt["path"]["strict_load"])
                self.log.info(f"loaded {name} weights from {weights}")
            self.networks[name] = net
        if opt["train"]["compile"]:
            self._compile()
        self.emas = {name: EMA(net, opt["train"]["ema_decay"]) for name, net in self.networks.items()
                     if opt["train"]["ema_decay"] > 0}
        self.env = RunContext(opt, self.networks, self.device)
        self.steps = [Step(name, o, self.env) for name, o in opt["steps"].items()]

        self.amp_dtype = self._amp_dtype()
        self.val_dtype, note = precision.autocast_dtype(opt["precision"], self.device, f"precision: {opt['precision']}")
        if note:
            self.log.warning(note)
        self.scaler = grad_scaler() if self.amp_dtype == torch.float16 else None

        train_opt = opt["datasets"].get("train")
        if train_opt is None:
            raise ConfigError("the recipe has no `datasets.train` section")
        self.train_set = build_dataset(train_opt, opt, "train")
        self.train_loader = build_dataloader(self.train_set, train_opt, "train", opt["manual_seed"])
        self.evaluators = build_evaluators(opt, self.env)
        self.it, self.epoch, self.sample_in_epoch = 0, 0, 0
        # Per step: how many of its losses in a row were non-finite, and the iteration of the first of them.
        # Counted per step, so a step that is always non-finite stops the run even while another one is fine.
        self.nan_skips: Dict[str, int] = {}
        self.first_nonfinite: Dict[str, int] = {}
        self.lineage: List[Dict[str, Any]] = []  # this run's checkpoints: the only ones it may prune
        self.saved_at: Optional[int] = None
        self.iterations_done = 0  # by this process, since it started
        self.metrics_history: List[Dict[str, Any]] = []
        self.freezing = RRDBFreezing(opt, self.networks)
        if resume_state is not None:
            self._load_training_state(self.resume_path, resume_state, changes)
        else:
            self.it = max(opt["start_step"], 0)
        for name in self.networks:
            self._wrap(name)

    def close(self) -> None:
        """Release the experiment folder and the log files (fit() does this when it ends)."""
        if hasattr(self, "logger"):
            self.logger.close()
        if self.lock:
            self.lock.release()

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
        path = Path(value)
        if path.is_dir():
            raise ConfigError(f"resume state `{value}` is a folder; --resume takes a training_state/<iter>.state "
                              "file or `auto`")
        if not path.is_file():
            raise ConfigError(f"resume state `{value}` does not exist")
        return path

    def _amp_dtype(self) -> Optional[torch.dtype]:
        """fp16: true: bf16 on a GPU that has it, else float16 (with a loss scaler); bf16 on a CPU that computes
        it natively, else float32 with a note (emulated bf16 is slower than float32)."""
        if not self.opt["fp16"]:
            return None
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        dtype, note = precision.autocast_dtype("bf16", self.device, "fp16: true")
        if note:
            self.log.warning(note)
        return dtype

    def autocast(self) -> Any:
        return precision.autocast(self.device, self.amp_dtype)

    def _wrap(self, name: str) -> None:
        """Under torchrun, (re)wrap a network with trainable parameters in DistributedDataParallel."""
        net = unwrap(self.networks[name])
        if self.opt["dist"] and any(p.requires_grad for p in net.parameters()):
            # A trainable RRDB inside a flow has outputs (the HR branch) the NLL never reads: DDP must not
            # wait for their gradients. Frozen, it is outside DDP and every flow parameter gets one.
            self.networks[name] = dist.wrap_ddp(net, self.device, find_unused=find_unused(net))

    # ------------------------------------------------------------------------------------ checkpoints
    def _load_training_state(self, path: Path, state: TrainingState, changes: List[str]) -> None:
        """Restore everything a checkpoint holds: weights, moving averages, and the TrainingState."""
        models = path.parent.parent / "models"
        for name, net in self.networks.items():
            file = state.model_files.get(name)
            if file is None:
                raise ConfigError(f"checkpoint {path} has no weights for network `{name}`")
            load_network_weights(net, models / file, strict=True)
        for name, ema in self.emas.items():
            file = state.model_files.get(checkpoint.ema_name(name))
            if file is not None:  # absent when the saved run kept no average
                ema.load_state_dict(checkpoint.load_file(models / file))
        self.env.iteration = self.it = state.iteration
        for name in self.freezing.resumed(state.freezing, self.it):
            self.unfreeze(name, "", announce=False)
        for name, reason in self.freezing.at_iteration(self.it):
            self.unfreeze(name, reason, announce=False)
        for step in self.steps:
            if step.name in state.steps:
                step.load_state_dict(state.steps[step.name])
        if self.scaler and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.epoch, self.sample_in_epoch = state.epoch, state.sample_in_epoch
        self.metrics_history = list(state.metrics_history)
        self.lineage = [e for e in state.lineage if e["iter"] <= self.it]
        rngs = state.rng
        checkpoint.set_rng_state(rngs[min(dist.rank(), len(rngs) - 1)])
        for line in changes:
            self.log.info(f"recipe changed since the checkpoint: {line}")
        self.log.info(f"resumed from {path} at iteration {self.it} (epoch {self.epoch})")
        newer = checkpoint.files_newer_than(self.root, self.it) if self.rank0 else []
        if newer:
            moved = run_folder.supersede(self.root, newer)
            self.log.info(f"{len(newer)} checkpoint files newer than iteration {self.it} were moved to {moved}, "
                          "so that this run does not overwrite them")

    def _last_good_checkpoint(self, before: Optional[int] = None) -> str:
        """'the newest good checkpoint is PATH' for the run's newest checkpoint (before iteration `before`)."""
        for entry in sorted(self.lineage, key=lambda e: -e["iter"]):
            state = self.root / entry["files"][-1]
            if (before is None or entry["iter"] < before) and state.is_file():
                return f"the newest good checkpoint is {state} (resume with --resume {state})"
        return "no checkpoint of this run was saved before it"

    def save(self) -> None:
        """Write checkpoint `self.it`; refused when weights or optimizer state hold inf or NaN."""
        rng = dist.gather(checkpoint.rng_state())  # every process takes part; only rank 0 writes
        if not self.rank0:
            return
        state = TrainingState(
            iteration=self.it, epoch=self.epoch, sample_in_epoch=self.sample_in_epoch,
            steps={s.name: s.state_dict() for s in self.steps},
            scaler=self.scaler.state_dict() if self.scaler else None, rng=rng,
            metrics_history=self.metrics_history, freezing=self.freezing.state_dict(),
            opt=recipe_changes.plain(self.opt))
        weights = {n: unwrap(net).state_dict() for n, net in self.networks.items()}
        weights.update({checkpoint.ema_name(n): e.state_dict() for n, e in self.emas.items()})
        bad = checkpoint.first_nonfinite({"weights": weights, "steps": state.steps})
        if bad:
            raise TrainingStopped(f"iteration {self.it}: `{bad}` holds inf or NaN, so no checkpoint was written; "
                                  f"{self._last_good_checkpoint()}. Lower the learning rate or clip gradients "
                                  "(steps.<step>.clip_grad_norm)")
        try:
            recipes = {n: recorded_section(self.opt, checkpoint.network_of(n)) for n in weights
                       if checkpoint.network_of(n) in self.opt["networks"]}  # what each weights file records
            path = checkpoint.save_checkpoint(self.opt["path"], self.it, weights, state, self.lineage,
                                              keep=self.opt["logger"]["keep_checkpoints"], recipes=recipes,
                                              weights_format=self.opt["logger"]["weights_format"])
        except OSError as e:
            raise TrainingStopped(f"cannot write checkpoint {e.filename or self.root}: {e.strerror or e}; "
                                  f"{self._last_good_checkpoint()}. Free space (or make the folder writable) "
                                  "and continue with --resume auto") from None
        self.saved_at = self.it
        self.log.info(f"saved checkpoint {path}")

    # ------------------------------------------------------------------------------------ freezing
    def unfreeze(self, name: str, reason: str, announce: bool = True) -> None:
        """Carry out the freeze policy's decision: the network's RRDB trains from now on."""
        if not self.freezing.unfreeze(self.networks[name]):
            return
        self._wrap(name)
        added = sum(step.add_trainable_parameters() for step in self.steps if name in step.networks)
        if announce:
            self.log.info(f"iteration {self.it}: RRDB of `{name}` unfrozen ({reason}); {added} tensors added "
                          "to the optimizer")

    # -------------------------------------------------------------------------------------- the loop
    def batches(self) -> Iterator[Dict[str, Any]]:
        """Endless training batches; the position (epoch, samples drawn) is part of the checkpoint."""
        sampler = self.train_loader.sampler
        while True:
            if self.sample_in_epoch >= sampler.num_samples:  # e.g. resumed with a larger batch size
                self.epoch, self.sample_in_epoch = self.epoch + 1, 0
            sampler.set_epoch(self.epoch, start_index=self.sample_in_epoch)
            for batch in self.train_loader:
                self.sample_in_epoch += self.train_loader.batch_size
                yield batch
            self.epoch, self.sample_in_epoch = self.epoch + 1, 0

    def to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _due(self, freq: int) -> bool:
        return self.it % freq == 0 or self.it == self.opt["train"]["niter"]

    def fit(self) -> List[Dict[str, Any]]:
        """Train to `train.niter`, saving, validating and logging on the recipe's schedule. A stop signal
        saves a checkpoint and raises TrainingInterrupted. The experiment folder is released at the end."""
        try:
            self._fit()
        except Exception:
            self.close()
            self._forget_failed_start()
            raise
        finally:
            self.close()
        return self.metrics_history

    def _forget_failed_start(self) -> None:
        """A fresh start that failed before finishing an iteration (a recipe mistake found by the first
        step) leaves no files behind: the corrected command starts as if it never ran."""
        if self.paths_before is None or self.iterations_done or self.saved_at is not None:
            return
        written = set(run_folder.earlier_files(self.root)) - self.paths_before
        for path in written:
            path.unlink(missing_ok=True)
        for folder in sorted(set(self.root.rglob("*")) - self.paths_before, reverse=True):  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def _fit(self) -> None:
        opt_train = self.opt["train"]
        niter = opt_train["niter"]
        self.log.info(f"training `{self.opt['name']}` on {self.device} from iteration {self.it} to {niter}; "
                      f"batch size {self.opt['datasets']['train']['batch_size']} per process x {dist.world_size()} process(es)")
        if self.resume_path and self._due(opt_train["val_freq"]) and not any(h["iter"] == self.it for h in self.metrics_history):
            self.validate()  # the checkpoint was saved before its validation, which did not finish
        bar = tqdm(total=niter, initial=self.it, disable=not self.rank0, dynamic_ncols=True, desc="train")
        data = self.batches()
        timer = time.time()
        with StopSignals() as stops:
            try:
                self._loop(data, stops, bar, timer)
            except DataError as e:
                self._stop_on_data(e)
            finally:
                bar.close()
            if self.it < niter:
                self._stop_on_signal(stops)
        if self.metrics_history and self.rank0:
            self.log.info("final validation: " + _psnr_summary(self.metrics_history[-1]))

    def _loop(self, data: Iterator[Dict[str, Any]], stops: StopSignals, bar: Any, timer: float) -> None:
        opt_train, opt_log = self.opt["train"], self.opt["logger"]
        niter = opt_train["niter"]
        while self.it < niter and not stops.stop_requested():
            batch = self._next_batch(data, stops)
            if batch is None:
                break
            self.it += 1
            self.env.iteration = self.it
            for name, reason in self.freezing.at_iteration(self.it):
                self.unfreeze(name, reason)
            logs = self.train_step(self.to_device(batch))
            self.iterations_done += 1
            bar.update(1)
            bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
            if self.it % opt_log["print_freq"] == 0:
                rate = opt_log["print_freq"] / max(time.time() - timer, 1e-9)
                timer = time.time()
                lr = self.steps[0].optimizer.param_groups[0]["lr"]
                self.log.info(f"iter {self.it:>7d} lr {lr:.3g} {rate:.2f} it/s " +
                              " ".join(f"{k} {v:.4g}" for k, v in logs.items()))
                self.logger.scalars({**logs, "lr": lr}, self.it, "train/")
            # The checkpoint comes first: a validation that fails cannot cost the iterations since the last one.
            if self._due(opt_log["save_checkpoint_freq"]):
                self.save()
            if self._due(opt_train["val_freq"]):
                self.validate()

    @staticmethod
    def _next_batch(data: Iterator[Dict[str, Any]], stops: StopSignals) -> Optional[Dict[str, Any]]:
        """The next batch, or None when the loader failed because a stop signal reached its workers too (the
        iteration has not begun: the run stops and saves as for a signal to this process alone)."""
        try:
            return next(data)
        except RuntimeError:
            if stops.received is None:
                raise
            return None

    def _stop_on_data(self, error: DataError) -> None:
        """The data changed under the run (between iterations, or in a validation after its checkpoint): the
        weights are whole, so they are saved first, and the run stops with one line naming the file."""
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = lines[-1].split("DataError: ", 1)[-1] if lines else "the data cannot be read"  # a worker's: its last line
        if self.it > 0 and self.saved_at != self.it:
            self.save()
        where = f"saved {self.root / 'training_state' / f'{self.it}.state'}" if self.saved_at == self.it \
            else self._last_good_checkpoint()
        raise TrainingStopped(f"iteration {self.it}: {reason}; {where}. Restore the data (or fix the recipe's "
                              "paths) and continue with --resume auto")

    def _stop_on_signal(self, stops: StopSignals) -> None:
        if self.saved_at != self.it:
            self.save()
        where = self.root / "training_state" / f"{self.it}.state"
        message = f"{stops.name()} at iteration {self.it}: saved {where}; continue with --resume auto"
        self.log.info(message)
        raise TrainingInterrupted(stops.received or signal.SIGTERM, message)

    def train_step(self, state: Dict[str, Any]) -> Dict[str, float]:
        logs: Dict[str, float] = {}
        for step in self.steps:
            if not active(step.opt, self.it):
                continue
            step.set_lr(self.lr_schedule, self.it)
            result = step.run(state, self.it, self.opt["train"]["mega_batch_factor"], self.autocast,
                              self.scaler, dist.no_sync)
            logs.update(result.logs)
            state.update(result.state)
            if result.skipped:
                self._count_nonfinite(step.name, result.logs)
            else:
                self.nan_skips.pop(step.name, None)
                self.first_nonfinite.pop(step.name, None)
        for name, ema in self.emas.items():
            ema.update(unwrap(self.networks[name]), self.it)
        self._save_visuals(state)
        return logs

    def _count_nonfinite(self, step: str, logs: Dict[str, float]) -> None:
        skips = self.nan_skips[step] = self.nan_skips.get(step, 0) + 1
        first = self.first_nonfinite.setdefault(step, self.it)
        self.log.warning(f"iteration {self.it}: non-finite loss in step `{step}` ({logs}); optimizer step "
                         f"skipped ({skips} in a row)")
        if skips > self.opt["train"]["max_nan_skips"]:
            raise TrainingStopped(
                f"{skips} non-finite losses in a row in step `{step}` at iteration {self.it} (the first at "
                f"{first}): stopping so the weights stay as they were; "
                f"{self._last_good_checkpoint(before=first)}. Lower the learning rate or check the data")

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
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            # The same random draws (SR samples at t > 0) at every pass, and training's random state untouched.
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.opt["manual_seed"])
                for evaluator in self.evaluators:
                    with precision.autocast(self.device, self.val_dtype):
                        metrics.update(evaluator.evaluate(self.it, self.logger))
        finally:
            for name, original in swapped.items():
                self.emas[name].restore(unwrap(self.networks[name]), original)
        metrics = dist.reduce_metrics(metrics)
        if self.rank0:
            self.log.info(f"validation at iter {self.it}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            self.logger.scalars(metrics, self.it, "val/")
        self.metrics_history.append({"iter": self.it, **metrics})
        for name, reason in self.freezing.after_validation(metrics):
            self.unfreeze(name, reason)
        return metrics


def _psnr_summary(metrics: Dict[str, Any]) -> str:
    """`val/psnr 27.1 dB vs bicubic 25.3 dB (+1.8)` for each validation set's PSNR figures."""
    parts = []
    for key, value in metrics.items():
        prefix, _, name = key.rpartition("/")
        base = metrics.get(f"{prefix}/psnr_bicubic")
        if name.startswith("psnr") and name != "psnr_bicubic" and base is not None:
            parts.append(f"{key} {value:.2f} dB vs bicubic {base:.2f} dB ({value - base:+.2f})")
    return "; ".join(parts) or ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "iter")
