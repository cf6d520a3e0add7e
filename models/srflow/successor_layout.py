"""Recognising the weights of SRFlow's NTIRE 2021 successors, SRFlow-DA and NCSR, from their tensors alone.

Their couplings tell them apart from SRFlow (models/srflow/layout.py, coupling_kind): SRFlow-DA's conditioning
nets are biased convolutions without ActNorm, in one stack (SRFlow-DA, -S) or in three parts (-R: a plain
hidden stack, -D: residual pairs); NCSR's couplings have a third net, `fAffine_std`, that reads the noise level.
SRFlow-DA-S squeezes by the whole scale at once, so the first step's width tells it from SRFlow-DA. What the
tensors do not give: which RRDB blocks feed the conditioning (only how many) and which of NCSR's coupling steps
read the noise level (`flow.S`; every step holds `fAffine_std`). The official releases' choices are known.
"""
import math
from typing import List, Optional, Tuple

from models.layouts import RECOGNISERS
from models.srflow.layout import FLOW, add_flow, conditioning_blocks, coupling_kind, coupling_prefixes, \
    couplings_are, flow_levels, rrdb_section, split_options, srflow_section
from utils.errors import ConfigError

# (scale, RRDB blocks, blocks stacked) -> the blocks the official SRFlow-DA and NCSR releases stack (4x and 8x)
OFFICIAL_BLOCKS = {(4, 23, 4): [1, 8, 15, 22], (8, 23, 4): [1, 8, 15, 22]}
# (scale, L, K) -> NCSR's `flow.S` in its official releases: per level, how many last steps read the noise level
OFFICIAL_NOISE_STEPS = {(4, 3, 16): [0, 16, 16], (8, 4, 20): [0, 0, 16, 16]}
DA_KINDS = ("deep", "SRFlow-DA-R", "SRFlow-DA-D")  # coupling_kind's names for SRFlow-DA's couplings


def hidden_convs(sd: dict, prefix: str, kind: str) -> List[str]:
    """The weights of a coupling's fAffine hidden convolutions (between its first and its output one)."""
    if kind == "deep":
        net = prefix + "fAffine."
        found = sorted(int(k[len(net):].split(".")[0]) for k in sd if k.startswith(net) and k.endswith(".weight"))
        return [f"{net}{i}.weight" for i in found[1:-1]]
    return [k for k in sd if k.startswith(prefix + "fAffine2.") and k.endswith(".weight")]


@RECOGNISERS.register("SRFlow-DA")
def recognise_srflow_da(sd: dict) -> Optional[Tuple[dict, str]]:
    prefixes = coupling_prefixes(sd)
    kinds = {coupling_kind(sd, p) for p in prefixes}
    if len(kinds) != 1 or not kinds <= set(DA_KINDS):
        return None
    kind = kinds.pop()
    section = rrdb_section(sd)
    levels = flow_levels(sd, split_ends_level=False)
    first_step = FLOW + "1.actnorm.bias"
    hidden = hidden_convs(sd, prefixes[0], kind)
    if section is None or not levels or len({level.plain for level in levels}) > 1 or first_step not in sd \
            or not hidden:
        return None
    scale, nf, nb = section["scale"], section["nf"], section["nb"]
    squeeze = round(math.sqrt(sd[first_step].shape[1] / section["out_nc"]))  # the first level's squeeze
    variant = kind if kind != "deep" else "SRFlow-DA-S" if squeeze == scale else "SRFlow-DA"
    if squeeze != (scale if variant == "SRFlow-DA-S" else 2):
        return None
    features = sd[prefixes[0] + ("fFeatures.0.weight" if kind == "deep" else "fFeatures1.0.weight")]
    blocks = conditioning_blocks(features.shape[1], nf, nb, scale, OFFICIAL_BLOCKS)
    coupling = {"hidden_channels": features.shape[0], "variant": variant, "n_hidden_layers": len(hidden),
                "kernel_hidden": sd[hidden[0]].shape[-1]}
    split = split_options(sd, any(level.splits for level in levels))
    flow = add_flow(section, levels, squeeze, blocks, split, coupling)["flow"]
    official = " (an official SRFlow-DA layout)" if (scale, nb, len(blocks)) in OFFICIAL_BLOCKS else ""
    return section, (f"{variant} nf {nf}, nb {nb}, {scale}x, L {flow['L']}, K {flow['K']}, {len(hidden)} hidden "
                     f"{coupling['kernel_hidden']}x{coupling['kernel_hidden']} convolutions of width "
                     f"{coupling['hidden_channels']}, RRDB blocks {blocks}{official}")


@RECOGNISERS.register("NCSRNet")
def recognise_ncsr(sd: dict) -> Optional[Tuple[dict, str]]:
    if not couplings_are(sd, "ncsr"):
        return None
    section = srflow_section(sd, OFFICIAL_BLOCKS)
    if section is None:
        return None
    first = coupling_prefixes(sd)[0]
    # fAffine reads [z1, conditioning], fAffine_std [z1, noise level]: their widths differ by the two last parts
    std_channels = sd[first + "fAffine_std.0.weight"].shape[1] - sd[first + "fAffine.0.weight"].shape[1] \
        + sd[first + "fFeatures.0.weight"].shape[1]
    flow, scale = section["flow"], section["scale"]
    k = flow["K"] if isinstance(flow["K"], int) else tuple(flow["K"])
    noise_steps = OFFICIAL_NOISE_STEPS.get((scale, flow["L"], k))
    if noise_steps is None:
        raise ConfigError(f"its flow is NCSR's (L {flow['L']}, K {flow['K']}), and the weights do not say which "
                          f"coupling steps read the noise level: use test.py -opt with the recipe it was trained "
                          f"with (flow.S)")
    flow.update(S=noise_steps, std_channels=std_channels)
    section["which_model_G"] = "NCSRNet"
    blocks = flow["stackRRDB"]["blocks"]
    official = " (an official NCSR layout)" if (scale, section["nb"], len(blocks)) in OFFICIAL_BLOCKS else ""
    return section, (f"NCSR nf {section['nf']}, nb {section['nb']}, {scale}x, L {flow['L']}, K {flow['K']}, "
                     f"S {noise_steps}, std_channels {std_channels}, RRDB blocks {blocks}{official}")
