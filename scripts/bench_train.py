"""Training throughput of a recipe: data loading alone, the model step alone, and both together.

    python scripts/bench_train.py -opt options/demo/rrdb_psnr.yml [--iters 20] [--set key=value ...]
"""
import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.trainer import Trainer  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.options import parse_options  # noqa: E402


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn, iters: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()

    def bench() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            opt = parse_options(args.opt, args.set + [f"path.experiments_root={tmp}", "use_tb_logger=false"])
            trainer = Trainer(opt)
            batch_size = opt["datasets"]["train"]["batch_size"]
            data = trainer.batches()
            data_s = timed(lambda: next(data), args.iters, torch.device("cpu"))
            fixed = trainer.to_device(next(data))
            trainer.it = 1

            def model_step() -> None:
                trainer.train_step(dict(fixed))
            model_s = timed(model_step, args.iters, trainer.device)
            both_s = timed(lambda: trainer.train_step(trainer.to_device(next(data))), args.iters, trainer.device)
            rows = [("data loading alone", data_s), ("model step alone", model_s), ("data + step", both_s)]
            print(f"recipe {args.opt}  device {trainer.device}  batch {batch_size}  "
                  f"threads {torch.get_num_threads()}  torch {torch.__version__}")
            print(f"{'part':<22}{'it/s':>10}{'images/s':>12}{'ms/it':>10}")
            for name, sec in rows:
                print(f"{name:<22}{1 / sec:>10.2f}{batch_size / sec:>12.1f}{sec * 1e3:>10.1f}")
            print(f"peak memory: {peak_memory_mb(trainer.device):.0f} MiB "
                  f"({'CUDA allocated' if trainer.device.type == 'cuda' else 'process max RSS'})")

    return run_cli(bench)


if __name__ == "__main__":
    sys.exit(main())
