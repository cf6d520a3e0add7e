"""SRFlow's options and their defaults, in one place, and how a recipe's `networks.<name>` section maps onto them.

A default is what the official code does when the recipe leaves the key out (absent is not false: no
`split.enable` means no split, no `additionalFlowNoAffine` means none of those steps). The flow's keys are
declared with `fill=False`: parse_options leaves them absent when a recipe does, and FlowConfig, whose field
defaults are the declared ones, applies them.
"""
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

from models.recipe_section import given, lookup
from models.rrdb import INITIAL_STRIDE, SHAPE_KEYS, RRDBConfig, rrdb_config
from models.srflow.variants import VARIANT_KEYS, check_variant
from utils.errors import ConfigError, closest
from utils.recipe_keys import COUNT, NUM, Key, WhenGiven


def _flow_key(types: Union[type, tuple], default: object, doc: str, **more: object) -> Key:
    return Key(types, default, doc, fill=False, **more)


# `networks.<name>.flow` of an SRFlow, as the official code reads it.
FLOW = {
    "L": _flow_key(int, None, "flow levels (required)", at_least=1),
    "K": _flow_key((int, list), None, "coupling steps per level (default: the section's `K`); a list is per level, "
                   "index 0 unused", at_least=1, items=COUNT),
    "coupling": _flow_key(str, None, "CondAffineSeparatedAndCond (required)"),
    "additionalFlowNoAffine": _flow_key(int, 0, "steps of ActNorm and 1x1 conv only, before each level's couplings",
                                        at_least=0),
    "flow_permutation": _flow_key(str, "invconv", "the only one: invconv"),
    "split": WhenGiven({
        "enable": _flow_key(bool, False, "a Split2d after each level but the last two"),
        "correct_splits": _flow_key(bool, False, "and after the last but one"),
        "type": _flow_key(str, "Split2d", "the only one: Split2d"),
        "consume_ratio": _flow_key(NUM, 0.5, "share of the channels a split factors out", above=0, below=1),
        "logs_eps": _flow_key(NUM, 0.0, "added to the split prior's std", at_least=0)},
        "the learned conditional prior of the factored-out channels"),
    "fea_up0": _flow_key(bool, False, "the RRDB gives a feature at 1/2 of the LR size (a level may read it)"),
    "fea_up-1": _flow_key(bool, False, "and at 1/4"),
    "stackRRDB": WhenGiven({
        "blocks": _flow_key(list, (), "RRDB blocks whose outputs are stacked into the conditioning", items=COUNT),
        "concat": _flow_key(bool, False, "whether they are")}, "the conditioning features"),
    "gaussian_loss_weight": _flow_key(NUM, 1.0, "weight of the splits' prior term in logdet (DLAS)",
                                      weights_fit=True),
    "augmentation": WhenGiven({"noiseQuant": _flow_key(bool, True, "training adds uniform dequantisation noise "
                                                       "of one quantisation step")}, "training noise",
                              weights_fit=True),
    "CondAffineSeparatedAndCond": WhenGiven({
        "eps": _flow_key(NUM, 1e-4, "floor of the couplings' scales", at_least=0),
        "hidden_channels": _flow_key(int, 64, "width of the couplings' conditioning networks", at_least=1),
        "multReverse": _flow_key(bool, None, "accepted; no effect (as officially)"),
        "variant": _flow_key(str, None, "an SRFlow-DA coupling: SRFlow-DA, SRFlow-DA-R, SRFlow-DA-S or SRFlow-DA-D "
                             "(absent: SRFlow's own; docs/ntire21_flows.md)"),
        "n_hidden_layers": _flow_key(int, None, "hidden convolutions of each conditioning net (default: the "
                                     "variant's)", at_least=1),
        "kernel_hidden": _flow_key(int, None, "their kernel size (default: the variant's)", at_least=1)},
        "the couplings"),
    "patch_size": _flow_key(int, None, "accepted; no effect (as officially), but checked against the flow's sizes",
                            at_least=1, weights_fit=True),
    "noInitialInj": _flow_key(bool, None, "accepted; no effect (as officially)"),
    "hidden_channels": _flow_key(int, None, "accepted; no effect (as officially): the width is "
                                 "`CondAffineSeparatedAndCond.hidden_channels`", at_least=1),
}

# NCSR's flow (models/srflow/ncsr_net.py): SRFlow's plus the couplings that read the noise level.
NCSR_FLOW = {
    **FLOW,
    "S": _flow_key(list, (), "per level (index 0 unused), how many of its last coupling steps read the noise level",
                   items=COUNT),
    "std_channels": _flow_key(int, None, "channels of the noise level those couplings read: 1 or 3"),
}

# A dataset key that SRFlow reads: `datasets.train.quant` (data/__init__.py declares it with this Key).
QUANT = Key(int, 255, "dequantisation levels of SRFlow's training noise", at_least=1)

# `networks.<name>` of which_model_G srflow.
KEYS = {
    **SHAPE_KEYS,
    "K": Key(int, None, "coupling steps per flow level", at_least=1, fill=False),
    "initial_stride": INITIAL_STRIDE,
    "flow_scale": Key(int, None, "HR/LR factor of the RRDB features the flow reads (default: `scale`)", at_least=1),
    "train_RRDB": Key(bool, False, "the RRDB trains with the flow from the start", weights_fit=True),
    "train_RRDB_delay": Key(NUM, None, "the RRDB is frozen for this fraction of `train.niter`, then trains",
                            at_least=0, weights_fit=True),
    "pretrain_rrdb": Key(str, None, "stage-1 RRDB weights loaded into the network's RRDB", path="file"),
    "flow": FLOW,
}


def _flow_default(*path: str) -> object:
    spec: object = FLOW
    for key in path:
        spec = spec[key]  # type: ignore[index]
    return spec.default  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FlowConfig:
    """The flow: `networks.<name>.flow` (the key path of each field is in FLOW_KEYS)."""
    L: int  # levels
    K: Union[int, Tuple[int, ...]]  # coupling steps per level; a tuple is per level, index 0 unused
    n_no_affine: int = _flow_default("additionalFlowNoAffine")
    split: bool = _flow_default("split", "enable")
    correct_splits: bool = _flow_default("split", "correct_splits")
    consume_ratio: float = _flow_default("split", "consume_ratio")
    logs_eps: float = _flow_default("split", "logs_eps")
    hidden_channels: int = _flow_default("CondAffineSeparatedAndCond", "hidden_channels")
    affine_eps: float = _flow_default("CondAffineSeparatedAndCond", "eps")
    gaussian_loss_weight: float = _flow_default("gaussian_loss_weight")
    noise_quant: bool = _flow_default("augmentation", "noiseQuant")
    blocks: Tuple[int, ...] = _flow_default("stackRRDB", "blocks")
    concat: bool = _flow_default("stackRRDB", "concat")
    fea_up0: bool = _flow_default("fea_up0")
    fea_up_1: bool = _flow_default("fea_up-1")  # `fea_up-1`
    variant: Optional[str] = None  # an SRFlow-DA coupling (models/srflow/deep_coupling.py); None: SRFlow's own
    n_hidden_layers: Optional[int] = None  # hidden convolutions of each conditioning net (None: the variant's)
    kernel_hidden: Optional[int] = None  # their kernel size (None: the variant's)
    std_steps: Tuple[int, ...] = ()  # NCSR's `S`: per level, how many of its last coupling steps read the noise level
    std_channels: int = 0  # NCSR: channels of the noise level the couplings read (1 or 3)

    def squeeze_factor(self, flow_scale: int) -> int:
        """How much each level's squeeze shrinks the sides: SRFlow-DA-S squeezes by the whole scale at once."""
        return flow_scale if self.variant == "SRFlow-DA-S" else 2

    def splits_after_level(self, level: int) -> bool:
        """Whether a Split2d ends `level`. SRFlow-DA splits after every level but the last, whatever
        `correct_splits` says; SRFlow after every level but the last two (the last one with correct_splits)."""
        last = self.L if self.variant or self.correct_splits else self.L - 1
        return self.split and level < last

    def splits_after_step(self, k: int) -> bool:
        """Whether a Split2d follows coupling step k (from 0) of a level: SRFlow-DA-S splits after steps 0, 6, 12..."""
        return self.split and self.variant == "SRFlow-DA-S" and k % 6 == 0


@dataclass(frozen=True)
class SRFlowConfig:
    """The whole network: its RRDB, its flow, and the flow's scale and quantisation."""
    rrdb: RRDBConfig
    flow: FlowConfig
    flow_scale: Optional[int] = None  # see feature_scale
    quant: float = QUANT.default  # the recipe's `datasets.train.quant`
    train_rrdb: bool = KEYS["train_RRDB"].default  # whether the RRDB trains with the flow

    def feature_scale(self) -> int:
        """The HR/LR factor of the RRDB features the flow reads (level l: this / 2**l): `flow_scale`, else the
        RRDB's scale."""
        return self.flow_scale or self.rrdb.scale


FLOW_KEYS: Dict[str, Tuple[str, ...]] = {  # FlowConfig field -> its key path under `flow` (K: see _levels_k)
    "L": ("L",), "n_no_affine": ("additionalFlowNoAffine",), "split": ("split", "enable"),
    "correct_splits": ("split", "correct_splits"), "consume_ratio": ("split", "consume_ratio"),
    "logs_eps": ("split", "logs_eps"), "hidden_channels": ("CondAffineSeparatedAndCond", "hidden_channels"),
    "affine_eps": ("CondAffineSeparatedAndCond", "eps"), "gaussian_loss_weight": ("gaussian_loss_weight",),
    "noise_quant": ("augmentation", "noiseQuant"), "blocks": ("stackRRDB", "blocks"),
    "concat": ("stackRRDB", "concat"), "fea_up0": ("fea_up0",), "fea_up_1": ("fea_up-1",),
    **VARIANT_KEYS,
}
CHOICES = {("coupling",): ("CondAffineSeparatedAndCond",), ("flow_permutation",): ("invconv",),
           ("split", "type"): ("Split2d",)}  # the one value each may have; absent is that value,
REQUIRED_CHOICE = ("coupling",)  # except for the coupling, which a recipe must name
UNSUPPORTED = (("split", "conditional"), ("split", "cond_channels"))  # no official recipe uses them
IGNORED = (("patch_size",), ("noInitialInj",), ("hidden_channels",),  # accepted, without effect (as officially)
           ("CondAffineSeparatedAndCond", "multReverse"))
RECIPE_FLOW_KEYS = sorted(NCSR_FLOW)  # what a raw section given to build_network may hold


def _levels_k(opt_net: dict, flow: dict, L: int, where: str) -> Union[int, Tuple[int, ...]]:
    """Steps per level. The official code uses the constructor's K (DLAS: the section's `K`) whenever
    flow.K is an int, and flow.K itself when it is a per-level list (index 0 unused)."""
    k_flow, k_top = flow.get("K"), opt_net.get("K")
    if isinstance(k_flow, (list, tuple)):
        if len(k_flow) < L + 1:
            raise ConfigError(f"`{where}.flow.K` as a list needs L + 1 = {L + 1} entries (index 0 unused)")
        return tuple(k_flow)
    if k_top is None and k_flow is None:
        raise ConfigError(f"`{where}.K` is required (steps per flow level)")
    if k_top is not None and k_flow is not None and k_top != k_flow:
        raise ConfigError(f"`{where}.K` ({k_top}) and `{where}.flow.K` ({k_flow}) disagree; DLAS would use "
                          f"{k_top}: make them equal")
    return int(k_top if k_top is not None else k_flow)


def _check_keys(opt_net: dict, flow: dict, where: str) -> None:
    for key, value in flow.items():
        if key not in RECIPE_FLOW_KEYS and value is not None:
            raise ConfigError(f"unknown key `{where}.flow.{key}`{closest(key, RECIPE_FLOW_KEYS)}; "
                              f"known: {', '.join(RECIPE_FLOW_KEYS)}")
    if "L" not in flow:
        raise ConfigError(f"`{where}.flow.L` is required (number of flow levels)")
    for path, known in CHOICES.items():
        value = lookup(flow, path)
        if value not in known and (value is not None or path == REQUIRED_CHOICE):
            raise ConfigError(f"unknown {path[-1]} `{value}` at `{where}.flow.{'.'.join(path)}`"
                              f"{closest(value, known)}; known: {', '.join(known)}")
    for path in UNSUPPORTED:
        if lookup(flow, path):
            raise ConfigError(f"`{where}.flow.{'.'.join(path)}` is not supported (no official recipe uses it)")


def _warn_ignored_width(flow: dict, config: FlowConfig, where: str) -> None:
    if flow.get("hidden_channels") not in (None, config.hidden_channels):
        warnings.warn(f"`{where}.flow.hidden_channels` has no effect (as in the official code); the coupling "
                      f"width is `flow.CondAffineSeparatedAndCond.hidden_channels` ({config.hidden_channels})")


def _check_sizes(config: SRFlowConfig, where: str) -> None:
    scale, flow_scale, flow = config.rrdb.scale, config.feature_scale(), config.flow
    if scale not in (4, 8) or flow_scale not in (4, 8):
        raise ConfigError(f"`{where}.scale` and `{where}.flow_scale` must be 4 or 8, got {scale} and {flow_scale}")
    if flow_scale > scale:
        raise ConfigError(f"`{where}.flow_scale` ({flow_scale}) needs RRDB features beyond `scale` ({scale})")
    below_lr = {0.5: ("fea_up0", flow.fea_up0), 0.25: ("fea_up-1", flow.fea_up_1)}
    for level in range(1, flow.L + 1):
        factor = flow_scale / flow.squeeze_factor(flow_scale) ** level
        key, enabled = below_lr.get(factor, (None, False))
        if factor < 1 and not enabled:
            raise ConfigError(f"flow level {level} of {flow.L} at scale {flow_scale} reads RRDB feature "
                              f"`{key or factor}`: set `{where}.flow.{key}: true` or lower `flow.L`")
    if any(not 0 <= b < config.rrdb.nb for b in flow.blocks):
        raise ConfigError(f"`{where}.flow.stackRRDB.blocks` {list(flow.blocks)} must index RRDB blocks "
                          f"0..{config.rrdb.nb - 1}")


def srflow_config(opt_net: dict, opt: dict, where: str) -> SRFlowConfig:
    """SRFlowConfig from a recipe's network section `where` (and the recipe's top-level and dataset keys it
    reads); a key that is absent or None keeps its default. Refuses what the network cannot build."""
    flow = opt_net.get("flow")
    if not isinstance(flow, dict):
        raise ConfigError(f"`{where}.flow` is required for which_model_G: srflow")
    _check_keys(opt_net, flow, where)
    fields = given(**{name: lookup(flow, path) for name, path in FLOW_KEYS.items()})
    fields["L"] = int(flow["L"])
    for name in ("blocks", "std_steps"):
        if name in fields:
            fields[name] = tuple(fields[name])
    flow_config = check_variant(FlowConfig(**fields, K=_levels_k(opt_net, flow, fields["L"], where)),
                                opt_net.get("which_model_G", "srflow"), where)
    _warn_ignored_width(flow, flow_config, where)
    config = SRFlowConfig(rrdb_config(opt_net, opt), flow_config, **given(
        flow_scale=opt_net.get("flow_scale"), quant=lookup(opt, ("datasets", "train", "quant")),
        train_rrdb=opt_net.get("train_RRDB")))
    _check_sizes(config, where)
    return config
