"""Convert an official SRFlow or ESRGAN checkpoint to this project's parameter names.

    python scripts/convert_official_weights.py SRFlow_DF2K_4X.pth SRFlow_DF2K_4X_converted.pth

Renames the RRDB's official names (RRDB_trunk -> body, RDB1 -> rdb1, trunk_conv -> conv_body,
upconvN -> conv_upN, HRconv -> conv_hr) and drops the unused `flowUpsamplerNet.f.0.*` convolution.
Not required for loading: `models.load_network_weights` converts on the fly. The output records the recipe
section of the network it holds when the tensors say which (docs/using_models.md); an OUT ending in
.safetensors is written in that format.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.layouts import recognise  # noqa: E402
from models.weights import convert_official, is_official, read_state_dict, save_weights  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.files import atomic_path  # noqa: E402


def convert(src: Path, dst: Path) -> str:
    """Convert `src` into `dst`; returns a one-paragraph report."""
    if not src.is_file():
        raise ConfigError(f"no such checkpoint: {src}")
    if dst.resolve() == src.resolve() or (dst.exists() and dst.samefile(src)):
        raise ConfigError("OUT must differ from IN: the input checkpoint is never overwritten")
    sd = read_state_dict(str(src))
    if not is_official(sd):
        raise ConfigError(f"{src} has no official ESRGAN/SRFlow names (RRDB_trunk, trunk_conv, ...): "
                          "nothing to convert")
    out, dropped = convert_official(sd)
    if len(out) + len(dropped) != len(sd):  # two official names mapping onto one would lose a tensor
        raise ConfigError(f"conversion lost keys: {len(sd)} in, {len(out)} out + {len(dropped)} dropped")
    try:
        network, found = recognise(str(src))
    except ConfigError:  # converted all the same; test.py --weights will say what it cannot tell
        network, found = None, "a network not recognised from its tensors (no recipe recorded)"
    with atomic_path(dst) as tmp:
        save_weights(out, tmp, network)
    renamed = sum(1 for k in sd if k not in out and k not in dropped)
    note = f"; dropped {len(dropped)} unused key(s): {', '.join(dropped)}" if dropped else ""
    return f"{src} -> {dst}: {len(sd)} keys in, {len(out)} out, {renamed} renamed{note}; holds {found}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="official checkpoint (.pth)")
    parser.add_argument("output", type=Path, help="where to write the converted state dict")
    args = parser.parse_args()
    try:
        print(convert(args.input, args.output))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
