"""The picture that ends `make demo`: each validation photo as bicubic | the trained network's SR | HQ, labelled
with their Y-PSNRs, over the same window of each enlarged; a line per photo prints the PSNRs and the picture's
path:

    python scripts/demo_report.py [-opt options/demo/rrdb_psnr.yml] [--weights FILE] [--out DIR]
    python scripts/demo_report.py -opt options/demo/esrgan.yml --label GAN \
        --baseline options/demo/rrdb_psnr.yml --baseline-label "stage-1 RRDB" --lr-psnr

With --baseline, the newest weights of that recipe's run get a panel of their own before the network's.

The weights default to the newest checkpoint of the recipe's run (its moving average when it kept one); the
pictures go to experiments/<name>/comparison/<photo>.png. The photos, and their LR, are the recipe's
validation set as validation makes it (MATLAB-exact bicubic), so the numbers are the run's own.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", default="options/demo/rrdb_psnr.yml",
                        help="the training recipe (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, as train.py's --set")
    parser.add_argument("--weights", help="generator weights (default: the newest checkpoint of the recipe's run)")
    parser.add_argument("--out", type=Path, help="folder for the pictures (default: the run's comparison/)")
    parser.add_argument("--label", default="demo SR", help="the network's panel label (default: %(default)s)")
    parser.add_argument("--baseline", help="a second training recipe whose run's newest weights are shown too")
    parser.add_argument("--baseline-label", default="baseline", help="its panel label (default: %(default)s)")
    parser.add_argument("--lr-psnr", action="store_true", help="print and label each panel's LR-PSNR too")
    args = parser.parse_args(argv)

    def report() -> None:
        from inference.model import load_generator, parse_inference_options, pick_device
        from inference.showcase import contenders, showcase
        opt = parse_inference_options(args.opt, args.set)
        device = pick_device(opt)
        entries = []
        if args.baseline:
            base_opt = parse_inference_options(args.baseline)
            base, base_weights = load_generator(base_opt, None, device)
            entries += contenders(args.baseline_label, base, base_opt)
            print(f"== {args.baseline_label}: weights {base_weights}")
        net, weights = load_generator(opt, args.weights, device)
        entries += contenders(args.label, net, opt)
        out = args.out or Path(opt["path"]["experiments_root"]) / "comparison"
        print(f"== {opt['name']}: Y-PSNR on the validation photos ({opt['scale']}x, border {opt['scale']}), "
              f"weights {weights}")
        print("\n".join(showcase(entries, opt, out, device, args.lr_psnr)))

    return run_cli(report)


if __name__ == "__main__":
    sys.exit(main())
