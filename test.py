"""Super-resolve the images of a recipe's `datasets.test*` sections and score them:
    python test.py -opt RECIPE [--set key=value ...] [--tile N] [--precision bf16] [--overwrite]

Results go to results/<name>/<dataset name>/: the PNGs, metrics.csv (a row per PNG), diversity.csv,
summary.csv (a row per temperature), temperature_sweep.png and comparisons/<image>.png. Run again, it
keeps the images already done and does the rest.
"""
import argparse
import sys

from utils import precision
from utils.cli import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="recipe path, or a file name under options/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set test.heats=[0,0.8] (repeatable)")
    parser.add_argument("--tile", type=int, help="process the LR image in overlapping tiles of about N pixels "
                                                 "(saves memory on large images; default: test.tile)")
    parser.add_argument("--precision", choices=precision.CHOICES,
                        help="bf16: faster on CPUs with native bf16 (AVX512_BF16, AMX) and on GPUs; "
                             "default: the recipe's `precision` (float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every image, even those an earlier run of the same settings finished")
    args = parser.parse_args(argv)

    def test() -> None:
        from inference.model import parse_inference_options
        from inference.test_runner import run_test
        tile = [] if args.tile is None else [f"test.tile={args.tile}"]  # checked as the recipe key is
        precision_set = [] if args.precision is None else [f"precision={args.precision}"]
        run_test(parse_inference_options(args.opt, args.set + tile + precision_set), overwrite=args.overwrite)

    return run_cli(test)


if __name__ == "__main__":
    sys.exit(main())
