"""Train a recipe as train.py does and report the figures a GPU check needs, as JSON:

    python scripts/train_figures.py -opt RECIPE [--set key=value ...] --json FILE

Figures: iterations/s (from the median step time: the data loader, the occasional visual-debug pass and
validation do not count), peak memory (CUDA max_memory_allocated; the process's peak RSS on the CPU), the
last validation's metrics, and how many steps had a non-finite loss. Stopped by SIGTERM (a time limit), it
writes the figures of the iterations made so far, then exits as train.py does. scripts/gpu_check.py runs it.
"""
import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.trainer import Trainer  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import TrainingInterrupted  # noqa: E402
from utils.files import atomic_write_text  # noqa: E402
from utils.options import parse_options  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", required=True, help="where to write the figures")
    args = parser.parse_args(argv)

    def train() -> None:
        trainer = Trainer(parse_options(args.opt, args.set))
        seconds, nonfinite = [], []
        step, count = trainer.train_step, trainer._count_nonfinite

        def timed_step(state):
            sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
            sync()
            start = time.perf_counter()
            logs = step(state)
            sync()
            seconds.append(time.perf_counter() - start)
            return logs

        def counted(name, logs):
            nonfinite.append(trainer.it)
            count(name, logs)

        trainer.train_step, trainer._count_nonfinite = timed_step, counted  # fit() calls them per iteration
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        try:
            trainer.fit()
            interrupted = None
        except TrainingInterrupted as e:  # stopped by a time limit: report what was measured, then say so
            interrupted = e
        if trainer.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        last = trainer.metrics_history[-1] if trainer.metrics_history else {}
        figures = {"device": str(trainer.device), "amp": str(trainer.amp_dtype), "iters": len(seconds),
                   "it_per_s": 1 / statistics.median(seconds) if seconds else None, "peak_mib": peak,
                   "nonfinite_steps": nonfinite, "validation": last}
        atomic_write_text(args.json, json.dumps(figures, indent=1) + "\n")
        print(json.dumps(figures))
        if interrupted is not None:
            raise interrupted

    return run_cli(train)


if __name__ == "__main__":
    sys.exit(main())
