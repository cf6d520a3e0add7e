"""Regenerate tests/data/srflow_official_{4,8}x.pt, the references of tests/test_srflow_net.py's parity test,
by running the official SRFlow code (andreas128/SRFlow) on seeded weights and inputs.

    git clone https://github.com/andreas128/SRFlow /tmp/SRFlow
    python scripts/make_official_reference.py --official /tmp/SRFlow

Each file holds what the test needs to rebuild the same network and inputs (the seed and std of the weights,
the official keys and shapes in sorted order, the inputs) and what the official code computed from them:
encode (epses, nll, logdet), three decodes (of those epses with the dequantisation term, at temperature 0,
of noisy epses) and, from a fresh model whose ActNorms are zero, the data-dependent ActNorm initialisation
of one training-mode encode. A file that exists and differs is reported and kept unless `--overwrite`.

On the machine that made them (2 CPU threads, torch 2.14) this reproduces both committed files exactly,
tensor for tensor; on one thread (`OMP_NUM_THREADS=1`) the 8x file differs by float32 round-off (1e-5 at
most, inside the test's tolerances), the convolutions summing in another order. A file written here is
byte for byte the committed one.

Only torch and numpy are needed: of the official `utils.util` (which imports natsort, cv2 and torchvision)
the networks use one function, `opt_get`, which this script provides. The official code is imported, never
changed or copied.
"""
import argparse
import importlib
import sys
import tempfile
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.files import atomic_write_bytes  # noqa: E402

WEIGHT_SEED, WEIGHT_STD = 0, 0.05
INPUT_SEED, NOISE_SEED, NOISE_STD = 1, 2, 0.1  # noisy epses: enc epses + NOISE_STD * N(0, 1)
QUANT = 32
NF, NB, K = 64, 4, 2  # narrow and shallow, every RRDB block stacked into the conditioning
LR_SIZES = {4: (8, 12), 8: (4, 6)}  # HR 32x48 at both scales
BATCH = 2


def official_options(scale: int) -> dict:
    """The official `opt` of an SRFlow_DF2K-style network at `scale`, with NF/NB/K above."""
    flow = {"K": K, "L": 3 if scale == 4 else 4, "noInitialInj": True, "coupling": "CondAffineSeparatedAndCond",
            "additionalFlowNoAffine": 2, "split": {"enable": True}, "fea_up0": True, "fea_up-1": True,
            "stackRRDB": {"blocks": list(range(NB)), "concat": True}, "gaussian_loss_weight": 1}
    return {"scale": scale, "datasets": {"train": {"quant": QUANT}},
            "network_G": {"which_model_G": "SRFlowNet", "in_nc": 3, "out_nc": 3, "nf": NF, "nb": NB, "K": K,
                          "train_RRDB": False, "flow": flow}}


def _opt_get(opt, keys, default=None):
    """The official `utils.util.opt_get`'s behaviour: the nested value, or `default` where it is None."""
    for key in keys:
        opt = None if opt is None else opt.get(key)
    return default if opt is None else opt


def import_official(checkout: Path, arch: str = "SRFlowNet", repo: str = "andreas128/SRFlow") -> type:
    """The official network class `arch` (from models/modules/{arch}_arch.py) of a checkout of `repo` (its root
    or its `code/` folder)."""
    module = f"models/modules/{arch}_arch.py"
    code = next((c for c in (checkout / "code", checkout) if (c / module).is_file()), None)
    if code is None:
        raise ConfigError(f"--official `{checkout}`: no code/{module} in it; "
                          f"expected a checkout of https://github.com/{repo}")
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
        del sys.modules[name]  # this project's packages of the same names (or another checkout's)
    util = types.ModuleType("utils.util")
    util.opt_get = _opt_get
    sys.modules["utils"] = types.ModuleType("utils")
    sys.modules["utils"].util = util
    sys.modules["utils.util"] = util
    sys.path.insert(0, str(code))
    try:
        return getattr(importlib.import_module(f"models.modules.{arch}_arch"), arch)
    finally:
        sys.path.remove(str(code))


def seeded_weights(keys_shapes: Sequence[Tuple[str, Sequence[int]]], seed: int,
                   std: float) -> Dict[str, torch.Tensor]:
    """N(0, std) for every tensor in the given (sorted) order, the 1x1 flow convolutions near the identity."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in keys_shapes:
        t = torch.randn(shape, generator=g) * std
        sd[key] = t + torch.eye(shape[0]) if key.endswith("invconv.weight") else t
    return sd


def seeded_inputs(scale: int, lr_size: Optional[Tuple[int, int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(lr, hr) in [0, 1), drawn from INPUT_SEED (the two are not a downscaled pair: parity needs none); the LR
    size is LR_SIZES[scale] unless given."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    h, w = lr_size or LR_SIZES[scale]
    lr = torch.rand(BATCH, 3, h, w, generator=g)
    return lr, torch.rand(BATCH, 3, h * scale, w * scale, generator=g)


def noisy(epses: List[torch.Tensor]) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(NOISE_SEED)
    return [e + NOISE_STD * torch.randn(e.shape, generator=g) for e in epses]


@torch.no_grad()
def reference(official: type, scale: int) -> dict:
    """Everything tests/test_srflow_net.py compares against, computed by the official code."""
    opt = official_options(scale)
    net = official(3, 3, NF, NB, scale=scale, K=K, opt=opt)
    keys_shapes = [(k, tuple(v.shape)) for k, v in sorted(net.state_dict().items())]
    sd = seeded_weights(keys_shapes, WEIGHT_SEED, WEIGHT_STD)
    net.load_state_dict(sd)
    net.eval()
    lr, hr = seeded_inputs(scale)
    epses, nll, logdet = net(gt=hr, lr=lr, epses=[], add_gt_noise=False)
    ref = {"seed": WEIGHT_SEED, "std": WEIGHT_STD, "keys_shapes": keys_shapes, "lr": lr, "hr": hr,
           "quant": QUANT, "enc": {"epses": epses, "nll": nll, "logdet": logdet}}

    def decode(**kwargs) -> dict:
        sr, logdet = net(lr=lr, reverse=True, **kwargs)
        return {"sr": sr, "logdet": logdet}
    ref["dec_rec"] = decode(epses=list(epses), add_gt_noise=True)
    # The official decode needs a z: at temperature 0 it is the mean, zeros.
    ref["dec_t0"] = decode(z=torch.zeros_like(epses[-1]), eps_std=0, add_gt_noise=False)
    ref["sample_epses"] = noisy(epses)
    ref["dec_sample"] = decode(epses=list(ref["sample_epses"]), add_gt_noise=False)
    ref["init"] = actnorm_initialisation(official, opt, sd, lr, hr, scale)
    return ref


def actnorm_initialisation(official: type, opt: dict, sd: Dict[str, torch.Tensor], lr: torch.Tensor,
                           hr: torch.Tensor, scale: int) -> dict:
    """A fresh model with zero ActNorms: one training-mode encode initialises them from the batch."""
    fresh = official(3, 3, NF, NB, scale=scale, K=K, opt=opt)
    fresh.load_state_dict({k: torch.zeros_like(v) if ".actnorm." in k else v for k, v in sd.items()})
    z, nll, logdet = fresh.train()(hr, lr, add_gt_noise=False)
    actnorm = {k: v for k, v in fresh.state_dict().items() if ".actnorm." in k}
    return {"z": z, "nll": nll, "logdet": logdet, "actnorm": actnorm}


def differences(old, new, where: str = "") -> List[str]:
    """Where two references differ (an empty list: equal, tensor for tensor)."""
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        return [d for k in old for d in differences(old[k], new[k], f"{where}.{k}".lstrip("."))]
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{where}[{i}]")]
    if torch.is_tensor(old) and torch.is_tensor(new):
        if old.shape == new.shape and torch.equal(old, new):
            return []
        if old.shape != new.shape:
            return [f"{where}: shape {tuple(old.shape)} -> {tuple(new.shape)}"]
        return [f"{where}: max |difference| {(old - new).abs().max().item():.3g}"]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def write(ref: dict, path: Path, overwrite: bool) -> str:
    """Save `ref` to `path` unless an equal file is there already (or a different one, without `overwrite`)."""
    if path.is_file():
        diffs = differences(torch.load(path, weights_only=True), ref)
        if not diffs:
            return f"{path}: unchanged (every tensor equal)"
        if not overwrite:
            return f"{path}: differs, kept (--overwrite replaces it): " + "; ".join(diffs[:5])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:  # torch names the archive inside after the file
        named = Path(folder) / path.name
        torch.save(ref, named)
        atomic_write_bytes(path, named.read_bytes())
    return f"{path}: written"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of andreas128/SRFlow (or its code/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    parser.add_argument("--overwrite", action="store_true", help="replace reference files that differ")
    args = parser.parse_args(argv)
    official = import_official(args.official)
    for scale in (4, 8):
        print(write(reference(official, scale), args.out / f"srflow_official_{scale}x.pt", args.overwrite))


if __name__ == "__main__":
    sys.exit(run_cli(main))
