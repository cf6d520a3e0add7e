"""Can the training DataLoader feed the model? Images/s the recipe's loader delivers (with its n_workers,
and with 0 workers) against images/s one training step consumes on a fixed batch.

    python scripts/bench_data.py -opt options/demo/rrdb_psnr.yml
    python scripts/bench_data.py -opt options/demo/srflow.yml --set networks.generator.pretrain_rrdb=
    python scripts/bench_data.py -opt train_div2k_srflow.yml --batches 50 --threads 8

Every row is timed after a warm-up (workers started, caches filled, ActNorm initialised) over 3
back-to-back windows of `--batches` batches, the fastest window counting (other jobs on the machine only
slow things down); the model step runs on one fixed batch. The last row runs loader and step together,
as training does: on a CPU the loader's workers and the step share the same cores. DataLoader workers run
PyTorch single-threaded; `--threads` is the main process's torch.set_num_threads (on a machine shared
with other jobs, fewer threads than cores give steadier numbers).
"""
import argparse
import functools
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import build_dataloader, build_dataset  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.options import parse_options  # noqa: E402

WINDOWS = 3


def endless(loader: torch.utils.data.DataLoader) -> Iterator[Dict[str, Any]]:
    """Batches epoch after epoch, re-seeding the sampler as the trainer does."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def best_window(fn: Callable[[], None], batches: int, warmup: int, sync: Callable[[], None]) -> float:
    """Seconds per call: fastest of WINDOWS back-to-back windows of `batches` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync()
    best = float("inf")
    for _ in range(WINDOWS):
        start = time.perf_counter()
        for _ in range(batches):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / batches)
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    except OSError:
        return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="training recipe (path or name under options/)")
    parser.add_argument("--set", action="append", default=[], help="override a recipe key: key=value")
    parser.add_argument("--batches", type=int, default=20, help="batches per timing window / timed model steps")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch.set_num_threads of the main process (default: the CPUs it may use)")
    args = parser.parse_args()

    def bench() -> None:
        if args.batches < 1 or args.threads < 1:
            raise ConfigError("--batches and --threads must be at least 1")
        torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            opt = parse_options(args.opt, args.set + [f"path.experiments_root={tmp}", "use_tb_logger=false"])
            trainer = Trainer(opt)
            train_opt = opt["datasets"]["train"]
            batch_size, workers = train_opt["batch_size"], train_opt.get("n_workers", 0)
            device = trainer.device

            def sync() -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            rows: List[tuple] = []  # (label, seconds per batch)
            fixed: Optional[Dict[str, Any]] = None
            for n in sorted({workers, 0}, reverse=True):
                # A fresh dataset per loader: no cache carried over from the other measurement.
                loader = build_dataloader(build_dataset(train_opt, opt, "train"), {**train_opt, "n_workers": n},
                                          "train", opt["manual_seed"])
                data = endless(loader)
                seconds = best_window(functools.partial(next, data), args.batches, max(3, 2 * n), lambda: None)
                rows.append((f"data loader, n_workers={n}" + (" (recipe)" if n == workers else ""), seconds))
                if fixed is None:
                    fixed = trainer.to_device(next(data))
                del data, loader  # shuts persistent workers down: they must not compete with the step
                gc.collect()

            trainer.it = 1  # injectors with `every` stay off, as on most iterations
            model_s = best_window(lambda: trainer.train_step(dict(fixed)), args.batches, 1, sync)
            rows.append(("model step alone (fixed batch)", model_s))
            batches = trainer.batches()  # the trainer's own loader, recipe's n_workers
            both_s = best_window(lambda: trainer.train_step(trainer.to_device(next(batches))), args.batches,
                                 max(3, 2 * workers), sync)
            rows.append((f"data (n_workers={workers}) + step, measured", both_s))

            hr = fixed["hq"].shape[-1]
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            print(f"recipe {args.opt}: batch {batch_size}, HR {hr}x{hr}; device {where}; "
                  f"torch.set_num_threads({args.threads}); {cpu_model()} ({os.cpu_count()} logical CPUs); "
                  f"torch {torch.__version__}")
            print(f"{'':<40}{'images/s':>10}{'ms/batch':>10}")
            for label, sec in rows:
                print(f"{label:<40}{batch_size / sec:>10.1f}{sec * 1e3:>10.1f}")
            print(verdict(dict(rows), workers, batch_size, model_s, both_s))

    return run_cli(bench)


def verdict(rows: Dict[str, float], workers: int, batch_size: int, model_s: float, both_s: float) -> str:
    """One paragraph: does the recipe's loader keep up with the step, and what 0 workers would cost."""
    recipe_s = next(s for label, s in rows.items() if label.endswith("(recipe)"))
    zero_s = next(s for label, s in rows.items() if label.startswith("data loader, n_workers=0"))
    need, give = batch_size / model_s, batch_size / recipe_s
    lines = []
    if workers == 0:
        lines.append(f"verdict: with n_workers=0 loading runs between steps: each batch waits {zero_s * 1e3:.0f} ms "
                     f"for data, {zero_s / (zero_s + model_s):.0%} of an iteration.")
    elif give < need:
        lines.append(f"verdict: data loading WOULD STARVE the model: {workers} worker(s) deliver {give:.1f} images/s, "
                     f"a step consumes {need:.1f}. Raise n_workers, or cut the images into small crops "
                     f"(scripts/extract_subimages.py).")
    else:
        lines.append(f"verdict: data loading keeps up: {workers} worker(s) deliver {give:.1f} images/s, "
                     f"{give / need:.1f}x what a step consumes ({need:.1f}).")
        lines.append(f"With n_workers=0 each step would wait {zero_s * 1e3:.0f} ms for its batch "
                     f"({zero_s / (zero_s + model_s):.0%} of an iteration).")
    slowdown = both_s / model_s - 1
    if slowdown > 0.1:
        lines.append(f"Together, loader and step run {slowdown:.0%} slower than the step alone "
                     "(they share the CPU cores, or the loader is the bottleneck).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
