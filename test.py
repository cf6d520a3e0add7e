"""Super-resolve the images of a recipe's `datasets.test*` sections and score them:
    python test.py -opt RECIPE [--set key=value ...] [--tile N] [--overwrite]

Results go to results/<name>/<dataset name>/: the PNGs, metrics.csv (a row per PNG), diversity.csv,
summary.csv (a row per temperature), temperature_sweep.png and comparisons/<image>.png. Run again, it
keeps the images already done and does the rest. The folder is locked while test.py runs, and a file there
that test.py did not write (results/<name>/.written.json lists what it did) is never written over.
"""
import argparse
import sys

from utils.cli import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", required=True, help="recipe path, or a file name under options/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set test.heats=[0,0.8] (repeatable)")
    parser.add_argument("--tile", type=int, help="process the LR image in overlapping tiles of about N pixels "
                                                 "(saves memory on large images; default: test.tile)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every image, even those an earlier run of the same settings finished")
    args = parser.parse_args(argv)

    def test() -> None:
        from inference.model import parse_inference_options
        from inference.test_runner import run_test
        tile = [] if args.tile is None else [f"test.tile={args.tile}"]  # checked as the recipe key is
        run_test(parse_inference_options(args.opt, args.set + tile), overwrite=args.overwrite)

    return run_cli(test)


if __name__ == "__main__":
    sys.exit(main())
