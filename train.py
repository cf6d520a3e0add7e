"""Train from a recipe: python train.py -opt RECIPE [--set key=value ...] [--resume auto|PATH | --fresh]

A run owns experiments/<name>/: an earlier run there is continued (--resume auto), moved aside (--fresh), or
left alone (without either, starting is refused). SIGINT, SIGTERM and SIGHUP save a checkpoint and stop.
"""
import argparse
import sys

from utils.cli import run_cli
from utils.cpu_memory import use_huge_pages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="recipe path, or a file name under options/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.niter=200 (repeatable)")
    parser.add_argument("--resume", help="`auto` (newest checkpoint of this run) or a training_state file")
    parser.add_argument("--fresh", action="store_true",
                        help="start afresh: move an earlier run's experiment folder aside to <name>_archived_<time>")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                        help="`pytorch` under torchrun for distributed training")
    args = parser.parse_args(argv)
    use_huge_pages()  # before torch is imported: utils/cpu_memory.py

    def train() -> None:
        from utils import dist
        from utils.options import parse_options
        opt = parse_options(args.opt, args.set)
        if args.launcher == "pytorch":
            import torch
            dist.init_from_env(bool(opt["gpu_ids"]) and torch.cuda.is_available())
            opt["dist"] = True
        from trainer.trainer import Trainer
        success = False
        try:
            Trainer(opt, resume=args.resume, fresh=args.fresh).fit()
            success = True
        finally:
            dist.shutdown(success)

    return run_cli(train)


if __name__ == "__main__":
    sys.exit(main())
