"""Regenerate tests/data/{srflow_da,ncsr}_*.pt, the references of tests/test_successors.py's parity tests, by
running the official SRFlow-DA (yhjo09/SRFlow-DA) and NCSR (younggeun-kim/NCSR) code in float64 on seeded
weights and inputs.

    git clone https://github.com/yhjo09/SRFlow-DA /tmp/SRFlow-DA
    git clone https://github.com/younggeun-kim/NCSR /tmp/NCSR
    python scripts/make_successor_reference.py --srflow-da /tmp/SRFlow-DA --ncsr /tmp/NCSR

Each file holds the official options (`opt`, from which the test builds the same network through a recipe),
the seed and std of the weights with the official keys and shapes in sorted order, the inputs, and what the
official code computed: encode (epses, nll, logdet), decode of those epses with the dequantisation term, at
temperature 0, and of noisy epses; NCSR's with a noise level `std` (see CASES). The helpers (weights, inputs,
file writing) are scripts/make_official_reference.py's; a file that exists and differs is kept unless
`--overwrite`.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, Iterator, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import make_official_reference as common  # noqa: E402
from utils.cli import run_cli  # noqa: E402

NF, NB = common.NF, common.NB  # the official couplings hard-code 320 = 64 * (1 + 4 stacked blocks) channels
DA_VARIANTS = ("SRFlow-DA", "SRFlow-DA-R", "SRFlow-DA-S", "SRFlow-DA-D")
STD_SEED, STD_LEVEL = 3, 0.05
DEEP_WEIGHT_STD = 0.01  # SRFlow-DA-D: 18 residual blocks per net would blow 0.05-weights' values up to inf
NCSR_LR_8X = (8, 12)  # NCSR's RRDB always computes a feature at 1/8 of the LR size


def flow_options(scale: int, K: int, L: int, **extra) -> dict:
    return {"K": K, "L": L, "noInitialInj": True, "coupling": "CondAffineSeparatedAndCond",
            "additionalFlowNoAffine": 2, "split": {"enable": True}, "fea_up0": True, "fea_up-1": True,
            "stackRRDB": {"blocks": list(range(NB)), "concat": True}, **extra}


def official_options(model: str, which: str, scale: int, flow: dict) -> dict:
    return {"model": model, "scale": scale, "datasets": {"train": {"quant": common.QUANT}},
            "network_G": {"which_model_G": which, "in_nc": 3, "out_nc": 3, "nf": NF, "nb": NB, "K": flow["K"],
                          "train_RRDB": False, "flow": flow}}


def da_options(variant: str, scale: int) -> dict:
    """A narrow SRFlow-DA conf: its levels as in the official confs (SRFlow-DA-S: one level, squeezed by the scale,
    with K 7 to split after steps 0 and 6), 2 steps per level otherwise."""
    if variant == "SRFlow-DA-S":
        flow = flow_options(scale, K=7, L=1)
    else:
        flow = flow_options(scale, K=2, L=2 if scale == 4 else 3)
    return official_options(variant, "SRFlowNet", scale, flow)


def ncsr_options(scale: int) -> dict:
    """NCSR with std_channels 3 at 4x (the official confs') and 1 at 8x; S reads the noise in some steps only."""
    if scale == 4:
        flow = flow_options(scale, K=2, L=3, S=[0, 1, 2], std_channels=3)
    else:
        flow = flow_options(scale, K=2, L=4, S=[0, 0, 1, 2], std_channels=1)
    return official_options("NCSR", "NCSRNet", scale, flow)


def in_float64(official: type) -> type:
    """The official class, its invertible 1x1 convolution's decode kept in the input's dtype. (The official one
    inverts in float64 and casts the inverse to float32, which a float64 run cannot take.) Only that method is
    replaced, in memory, by the same map: weight^-1 as a 1x1 kernel, log|det weight| * H * W."""
    permutations = sys.modules["models.modules.Permutations"]

    def get_weight(self, input: torch.Tensor, reverse: bool):
        dlogdet = torch.slogdet(self.weight)[1] * (input.shape[2] * input.shape[3])
        weight = torch.inverse(self.weight) if reverse else self.weight
        return weight.view(*self.w_shape, 1, 1), dlogdet
    permutations.InvertibleConv1x1.get_weight = get_weight
    return official


def cases(da: Path, ncsr: Path) -> Iterator[Tuple[str, type, dict]]:
    """(file name, official class, options) of every reference."""
    for variant in DA_VARIANTS:
        official = in_float64(common.import_official(da, "SRFlowNet", "yhjo09/SRFlow-DA"))
        for scale in (4, 8):
            yield f"srflow_da_{variant[len('SRFlow-DA'):].lstrip('-').lower() or 'plain'}_{scale}x.pt", official, \
                da_options(variant, scale)
    official = in_float64(common.import_official(ncsr, "NCSRNet", "younggeun-kim/NCSR"))
    for scale in (4, 8):
        yield f"ncsr_{scale}x.pt", official, ncsr_options(scale)


def noise_levels(opt: dict, hr: torch.Tensor) -> Dict[str, torch.Tensor]:
    """NCSR's `std` arguments: a training one (the noise map with std_channels 3, else a level per image) and a
    level per image; the test time level 0 is zeros (B, 1, 1, 1)."""
    g = torch.Generator().manual_seed(STD_SEED)
    level = torch.rand(hr.shape[0], 1, 1, 1, generator=g, dtype=hr.dtype) * STD_LEVEL
    noise = torch.randn(hr.shape, generator=g, dtype=hr.dtype) * level
    train = noise if opt["network_G"]["flow"]["std_channels"] == 3 else level
    return {"train": train, "level": level, "zero": torch.zeros_like(level)}


@torch.no_grad()
def reference(official: type, opt: dict) -> dict:
    """What tests/test_successors.py compares against, computed by the official code in float64."""
    scale, K = opt["scale"], opt["network_G"]["K"]
    net = official(3, 3, NF, NB, scale=scale, K=K, opt=opt)
    keys_shapes = [(k, tuple(v.shape)) for k, v in sorted(net.state_dict().items())]
    weight_std = DEEP_WEIGHT_STD if opt["model"] == "SRFlow-DA-D" else common.WEIGHT_STD
    sd = common.seeded_weights(keys_shapes, common.WEIGHT_SEED, weight_std)
    net.load_state_dict(sd)
    net.double().eval()
    ncsr = opt["network_G"]["which_model_G"] == "NCSRNet"
    lr, hr = (t.double() for t in common.seeded_inputs(scale, NCSR_LR_8X if ncsr and scale == 8 else None))
    std = noise_levels(opt, hr) if ncsr else {}

    def with_std(kind: str) -> dict:
        return {"std": std[kind]} if ncsr else {}
    epses, nll, logdet = net(gt=hr, lr=lr, epses=[], add_gt_noise=False, **with_std("train"))
    ref = {"opt": opt, "seed": common.WEIGHT_SEED, "std": weight_std, "keys_shapes": keys_shapes,
           "lr": lr, "hr": hr, "noise_std": std, "enc": {"epses": epses, "nll": nll, "logdet": logdet}}

    def decode(kind: str, **kwargs) -> dict:
        sr, logdet = net(lr=lr, reverse=True, **with_std(kind), **kwargs)
        return {"sr": sr, "logdet": logdet}
    ref["dec_rec"] = decode("train", epses=list(epses), add_gt_noise=True)
    ref["dec_t0"] = decode("level", z=torch.zeros_like(epses[-1]), eps_std=0, add_gt_noise=False)
    ref["sample_epses"] = [e.double() for e in common.noisy([e.float() for e in epses])]
    ref["dec_sample"] = decode("zero", epses=list(ref["sample_epses"]), add_gt_noise=False)
    return ref


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--srflow-da", type=Path, required=True, help="checkout of yhjo09/SRFlow-DA (or its code/)")
    parser.add_argument("--ncsr", type=Path, required=True, help="checkout of younggeun-kim/NCSR (or its code/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    parser.add_argument("--overwrite", action="store_true", help="replace reference files that differ")
    parser.add_argument("--only", default="", help="only the files whose name contains this, e.g. ncsr")
    args = parser.parse_args(argv)
    for name, official, opt in cases(args.srflow_da, args.ncsr):
        if args.only in name:
            print(common.write(reference(official, opt), args.out / name, args.overwrite))


if __name__ == "__main__":
    sys.exit(run_cli(main))
