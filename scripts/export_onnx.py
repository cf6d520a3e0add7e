"""Export a trained network to ONNX, for onnxruntime, chaiNNer and other tools (docs/using_models.md):
    python scripts/export_onnx.py --weights FILE [-opt RECIPE] --output FILE.onnx [--sampling] [--overwrite]

The graph takes the LR image (float32, N x 3 x h x w, values 0-1) and gives the SR image: the RRDB's result, or
SRFlow's mean image (temperature 0). With --sampling, SRFlow's graph also takes the temperature and its
latents, one standard-normal tensor per split level and z (the script prints their shapes). Height and width
are dynamic. The network is recognised from the weights, or built from RECIPE's generator.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, metavar="FILE", help="weights file (.pth, .safetensors)")
    parser.add_argument("-opt", "--opt", metavar="RECIPE", help="build the network from this recipe's generator")
    parser.add_argument("--output", required=True, type=Path, metavar="FILE.onnx", help="the ONNX file to write")
    parser.add_argument("--sampling", action="store_true",
                        help="SRFlow: a graph that also takes the temperature and the latents")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)

    def export() -> None:
        if args.output.exists() and not args.overwrite:
            raise ConfigError(f"{args.output} exists: choose another --output, or add --overwrite")
        try:
            import onnx  # noqa: F401  (torch.onnx.export needs it)
        except ImportError:
            raise ConfigError("ONNX export needs the onnx package: pip install -r requirements.txt") from None
        from inference.onnx_export import describe_inputs, export_onnx
        from inference.weights_only import network_from_weights
        from models import is_flow
        net, found = network_from_weights(args.weights, args.opt)
        if args.sampling and not is_flow(net):
            raise ConfigError(f"--sampling needs an SRFlow network; {args.weights} holds {found}")
        print(f"{args.weights}: {found}")
        export_onnx(net, args.output, args.sampling)
        print(f"wrote {args.output}: {describe_inputs(net, args.sampling)}")

    return run_cli(export)


if __name__ == "__main__":
    sys.exit(main())
