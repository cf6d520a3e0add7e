"""Recognising SRFlow weights (this project's, DLAS's and the official releases') from their tensors alone.

The tensors give the RRDB's sizes and, layer by layer, the flow: a squeeze (no tensors) opens each level, then
steps with ActNorm and 1x1 conv only, steps with a coupling, and maybe a split. What they do not give is which
RRDB blocks feed the conditioning (only how many): the official releases' choices are known, all blocks is the
only other unambiguous case. The successors' files (SRFlow-DA, NCSR) have other couplings: their recognisers
(models/srflow/successor_layout.py) build on `srflow_section` and `coupling_kind`.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from models.layouts import RECOGNISERS
from models.rrdb import rrdb_layout
from utils.errors import ConfigError

FLOW = "flowUpsamplerNet.layers."
# (scale, RRDB blocks, blocks stacked) -> the blocks the official SRFlow releases stack (4x, 8x, CelebA 8x)
OFFICIAL_BLOCKS = {(4, 23, 4): [1, 8, 15, 22], (8, 23, 4): [1, 3, 5, 7], (8, 8, 4): [1, 3, 5, 7]}


@dataclass
class Level:
    plain: int = 0  # steps without a coupling (additionalFlowNoAffine)
    coupled: int = 0  # steps with one (K)
    splits: int = 0  # SRFlow's and NCSR's end a level; SRFlow-DA-S splits inside its one level


def flow_levels(sd: dict, split_ends_level: bool = True) -> Optional[List[Level]]:
    """The flow's levels read from its layers' tensors, or None when they are not SRFlow's layer pattern
    (with `split_ends_level`, a split is a level's last layer)."""
    layers: Dict[int, List[str]] = {}
    for key in sd:
        if key.startswith(FLOW):
            index, _, name = key[len(FLOW):].partition(".")
            if not index.isdigit():
                return None
            layers.setdefault(int(index), []).append(name)
    if not layers:
        return None
    levels: List[Level] = []
    for i in range(max(layers) + 1):
        names = layers.get(i)
        if names is None:  # a squeeze: a new level
            levels.append(Level())
        elif not levels or (split_ends_level and levels[-1].splits):
            return None
        elif any(n.startswith("affine.") for n in names):
            levels[-1].coupled += 1
        elif any(n.startswith("actnorm.") for n in names) and not levels[-1].coupled:
            levels[-1].plain += 1
        elif any(n.startswith("conv.") for n in names):
            levels[-1].splits += 1
        else:
            return None
    return levels


def split_options(sd: dict, enable: bool) -> dict:
    """The `flow.split` keys: on or off, and the share of channels a split takes (from its prior's conv)."""
    split = {"enable": enable}
    split_conv = [k for k in sd if k.startswith(FLOW) and k.endswith(".conv.weight")]
    if split_conv:
        consume, kept = sd[split_conv[0]].shape[0] // 2, sd[split_conv[0]].shape[1]
        split["consume_ratio"] = consume / (consume + kept)
    return split


def coupling_prefixes(sd: dict) -> List[str]:
    """`flowUpsamplerNet.layers.<i>.affine.` of every flow step with a coupling, in layer order."""
    found = {int(k[len(FLOW):].split(".")[0]) for k in sd
             if k.startswith(FLOW) and k[len(FLOW):].split(".")[0].isdigit() and ".affine." in k}
    return [f"{FLOW}{i}.affine." for i in sorted(found)]


def coupling_kind(sd: dict, prefix: str) -> Optional[str]:
    """Which coupling the tensors under `prefix` are: `srflow` (SRFlow's own: conditioning nets with ActNorm,
    no biases), `ncsr` (SRFlow's plus `fAffine_std`), `deep` (SRFlow-DA's or -S's one stack of biased
    convolutions), `SRFlow-DA-R` or `SRFlow-DA-D` (nets in three parts); None for any other."""
    nets = {k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)}
    biased = prefix + "fAffine.0.bias" in sd
    if nets == {"fAffine", "fFeatures"}:
        return "deep" if biased else "srflow"
    if nets == {"fAffine", "fFeatures", "fAffine_std"} and not biased:
        return "ncsr"
    if nets == {f"{net}{part}" for net in ("fAffine", "fFeatures") for part in "123"}:
        return "SRFlow-DA-D" if prefix + "fAffine2.0.0.weight" in sd else "SRFlow-DA-R"
    return None


def couplings_are(sd: dict, kind: str) -> bool:
    """Whether the flow has couplings and all are of `kind` (see coupling_kind)."""
    prefixes = coupling_prefixes(sd)
    return bool(prefixes) and all(coupling_kind(sd, p) == kind for p in prefixes)


def conditioning_blocks(cond_channels: int, nf: int, nb: int, scale: int,
                        official: Dict[Tuple[int, int, int], List[int]]) -> List[int]:
    """The RRDB blocks stacked into the conditioning, from the width of the couplings' feature input;
    `official`: (scale, RRDB blocks, blocks stacked) -> the blocks a family's releases stack."""
    stacked, rest = divmod(cond_channels, nf)
    stacked -= 1
    if rest or stacked < 0:
        raise ConfigError(f"its couplings read {cond_channels} conditioning channels, not a multiple of nf {nf}")
    if stacked in (0, nb):
        return list(range(stacked))
    if (scale, nb, stacked) in official:
        return official[(scale, nb, stacked)]
    raise ConfigError(f"its flow reads the outputs of {stacked} of its {nb} RRDB blocks, and the weights do not "
                      f"say which: use test.py -opt with the recipe it was trained with (flow.stackRRDB.blocks)")


def rrdb_section(sd: dict) -> Optional[dict]:
    """An `srflow` section holding the RRDB's keys read from its tensors, or None when they are no RRDB's."""
    rrdb = rrdb_layout({k[len("RRDB."):]: v for k, v in sd.items() if k.startswith("RRDB.")})
    return None if rrdb is None else dict(rrdb[0], which_model_G="srflow")


def add_flow(section: dict, levels: List[Level], squeeze: int, blocks: List[int], split: dict,
             coupling: dict) -> dict:
    """`section` (from rrdb_section) with the flow keys of `levels`, the first level's squeeze factor, the
    stacked RRDB `blocks`, the `split` and `CondAffineSeparatedAndCond` keys."""
    scale, L = section["scale"], len(levels)
    ks = [level.coupled for level in levels]
    factors = [scale / squeeze ** level for level in range(1, L + 1)]
    flow = {"L": L, "K": ks[0] if len(set(ks)) == 1 else [0] + ks, "coupling": "CondAffineSeparatedAndCond",
            "additionalFlowNoAffine": levels[0].plain, "split": split,
            "fea_up0": 0.5 in factors, "fea_up-1": 0.25 in factors,
            "stackRRDB": {"blocks": blocks, "concat": bool(blocks)}, "CondAffineSeparatedAndCond": coupling}
    section.update(flow_scale=scale, flow=flow, **({"K": ks[0]} if len(set(ks)) == 1 else {}))
    return section


def srflow_section(sd: dict, official: Dict[Tuple[int, int, int], List[int]]) -> Optional[dict]:
    """The `srflow` section of a flow whose couplings' nets are `fAffine` and `fFeatures` and whose splits end
    levels (SRFlow's and NCSR's layer pattern), or None; the couplings' kind is the caller's to check."""
    section = rrdb_section(sd)
    levels = flow_levels(sd)
    couplings = coupling_prefixes(sd)
    if section is None or not levels or len({level.plain for level in levels}) > 1 or not couplings \
            or couplings[0] + "fFeatures.0.weight" not in sd:
        return None
    split_levels = [i for i, level in enumerate(levels, 1) if level.splits]
    features = sd[couplings[0] + "fFeatures.0.weight"]
    blocks = conditioning_blocks(features.shape[1], section["nf"], section["nb"], section["scale"], official)
    split = split_options(sd, bool(split_levels))
    if split_levels == list(range(1, len(levels))):
        split["correct_splits"] = True
    return add_flow(section, levels, 2, blocks, split, {"hidden_channels": features.shape[0]})


@RECOGNISERS.register("srflow")
def recognise_srflow(sd: dict) -> Optional[Tuple[dict, str]]:
    if not couplings_are(sd, "srflow"):
        return None
    section = srflow_section(sd, OFFICIAL_BLOCKS)
    if section is None:
        return None
    flow, scale, blocks = section["flow"], section["scale"], section["flow"]["stackRRDB"]["blocks"]
    official = " (an official SRFlow layout)" if (scale, section["nb"], len(blocks)) in OFFICIAL_BLOCKS else ""
    return section, (f"SRFlow nf {section['nf']}, nb {section['nb']}, {scale}x, L {flow['L']}, K {flow['K']}, "
                     f"RRDB blocks {blocks}{official}")
