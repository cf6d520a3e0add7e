"""Super-resolve images and score them, from a recipe's `datasets.test*` sections or from a weights file alone:
    python test.py -opt RECIPE [--set key=value ...] [--tile N] [--precision bf16] [--overwrite]
    python test.py --weights FILE --input FILE_OR_DIR [--output DIR] [--hq DIR] [--heat T ...] [--samples N]
                   [--tile N] [--precision bf16] [--overwrite]

With -opt, results go to results/<name>/<dataset name>/: the PNGs, metrics.csv (a row per PNG), diversity.csv,
summary.csv (a row per temperature), temperature_sweep.png and comparisons/<image>.png. With --weights, the
network is recognised from the file (docs/using_models.md) and the same go to --output (default
results/<weights file stem>); --hq DIR scores them against the HQ images of the same names. Run again, it keeps
the images already done and does the rest. The results folder is locked while test.py runs, and a file there
that test.py did not write (<folder>/.written.json lists what it did) is never written over.
"""
import argparse
import sys

from utils import precision
from utils.cli import run_cli
from utils.cpu_memory import use_huge_pages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", help="recipe path, or a file name under options/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set test.heats=[0,0.8] (repeatable)")
    parser.add_argument("--weights", metavar="FILE", help="upscale with these weights (.pth, .safetensors), no recipe")
    parser.add_argument("--input", metavar="FILE_OR_DIR", help="with --weights: the LR image(s) to upscale")
    parser.add_argument("--output", metavar="DIR", help="with --weights: the results folder")
    parser.add_argument("--hq", metavar="DIR", help="with --weights: HQ images of the inputs' names, to score against")
    parser.add_argument("--heat", type=float, nargs="+", metavar="T",
                        help="with --weights: SRFlow's temperatures (default 0: the mean image)")
    parser.add_argument("--samples", type=int, metavar="N", help="with --weights: samples per temperature above 0")
    parser.add_argument("--tile", type=int, help="process the LR image in overlapping tiles of about N pixels "
                                                 "(saves memory on large images; default: test.tile)")
    parser.add_argument("--precision", choices=precision.CHOICES,
                        help="bf16: faster on CPUs with native bf16 (AVX512_BF16, AMX) and on GPUs; "
                             "default: the recipe's `precision` (float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every image, even those an earlier run of the same settings finished")
    args = parser.parse_args(argv)
    use_huge_pages()  # before torch is imported: utils/cpu_memory.py
    only_weights = [f"--{name}" for name in ("input", "output", "hq", "heat", "samples")
                    if getattr(args, name) is not None]
    if (args.opt is None) == (args.weights is None):
        parser.error("give either -opt RECIPE or --weights FILE --input FILE_OR_DIR")
    if args.opt and only_weights:
        parser.error(f"{', '.join(only_weights)} go with --weights; with -opt use --set (test.heats=..., ...)")
    if args.weights and (args.input is None or args.set):
        parser.error("--weights needs --input FILE_OR_DIR" if args.input is None else "--set goes with -opt")

    def test() -> None:
        from inference.model import parse_inference_options
        from inference.test_runner import run_test
        tile = [] if args.tile is None else [f"test.tile={args.tile}"]  # checked as the recipe key is
        precision_set = [] if args.precision is None else [f"precision={args.precision}"]
        if args.opt:
            run_test(parse_inference_options(args.opt, args.set + tile + precision_set), overwrite=args.overwrite)
            return
        from tqdm import tqdm
        from inference.weights_only import weights_recipe
        recipe, found = weights_recipe(args.weights, args.input, args.output, args.hq, args.heat, args.samples)
        tqdm.write(f"{args.weights}: {found}")
        run_test(parse_inference_options(recipe, tile + precision_set), overwrite=args.overwrite)

    return run_cli(test)


if __name__ == "__main__":
    sys.exit(main())
