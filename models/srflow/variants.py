"""The flow options of SRFlow's NTIRE 2021 successors, SRFlow-DA and NCSR, and their per-variant defaults.

SRFlow-DA (yhjo09/SRFlow-DA) picks its coupling by the official conf's top-level `model:`; here that value goes
in `flow.CondAffineSeparatedAndCond.variant`. Its conditioning nets' depth and kernel default to what the
official code hard-codes for the variant. NCSR (younggeun-kim/NCSR) adds `flow.S` and `flow.std_channels`.
"""
import dataclasses
from typing import Dict, Tuple

from utils.errors import ConfigError, closest

# FlowConfig field -> its key path under `flow` (merged into config.FLOW_KEYS)
VARIANT_KEYS: Dict[str, Tuple[str, ...]] = {
    "variant": ("CondAffineSeparatedAndCond", "variant"),
    "n_hidden_layers": ("CondAffineSeparatedAndCond", "n_hidden_layers"),
    "kernel_hidden": ("CondAffineSeparatedAndCond", "kernel_hidden"),
    "std_steps": ("S",), "std_channels": ("std_channels",),
}
# (n_hidden_layers, kernel_hidden) of each coupling; None is SRFlow's own (one 1x1 hidden convolution).
VARIANT_DEFAULTS = {None: (1, 1), "SRFlow-DA": (4, 3), "SRFlow-DA-R": (4, 3), "SRFlow-DA-S": (4, 3),
                    "SRFlow-DA-D": (36, 3)}
VARIANTS = tuple(v for v in VARIANT_DEFAULTS if v)
STD_CHANNELS = (1, 3)


def check_variant(config, model: str, where: str):
    """`config` (a FlowConfig) with the variant's defaults filled in; refuses what the variant cannot build."""
    key = f"{where}.flow.CondAffineSeparatedAndCond"
    if config.variant is not None and config.variant not in VARIANTS:
        raise ConfigError(f"unknown variant `{config.variant}` at `{key}.variant`{closest(config.variant, VARIANTS)}; "
                          f"known: {', '.join(VARIANTS)} (absent: SRFlow's own coupling)")
    layers, kernel = VARIANT_DEFAULTS[config.variant]
    config = dataclasses.replace(config, n_hidden_layers=config.n_hidden_layers or layers,
                                 kernel_hidden=config.kernel_hidden or kernel)
    if config.variant is None and (config.n_hidden_layers, config.kernel_hidden) != (layers, kernel):
        raise ConfigError(f"`{key}.n_hidden_layers` and `.kernel_hidden` need a `{key}.variant` (SRFlow's own "
                          f"coupling has one 1x1 hidden convolution): remove them or name a variant")
    if config.kernel_hidden % 2 == 0:
        raise ConfigError(f"`{key}.kernel_hidden` must be odd (a 'same' convolution), got {config.kernel_hidden}")
    least = 2 if config.variant == "SRFlow-DA-D" else 1  # DA-D's residual blocks hold two convolutions each
    if config.variant and config.n_hidden_layers < least:
        raise ConfigError(f"`{key}.n_hidden_layers` must be >= {least} for {config.variant}, "
                          f"got {config.n_hidden_layers}")
    return _check_ncsr(config, model, where)


def _check_ncsr(config, model: str, where: str):
    given = config.std_steps or config.std_channels
    if model != "NCSRNet":
        if given:
            raise ConfigError(f"`{where}.flow.S` and `{where}.flow.std_channels` are NCSR's: set "
                              f"`{where}.which_model_G: NCSRNet` or remove them")
        return config
    if config.variant:
        raise ConfigError(f"`{where}.flow.CondAffineSeparatedAndCond.variant` is SRFlow-DA's; NCSRNet uses "
                          f"SRFlow's coupling: remove it")
    if len(config.std_steps) != config.L:
        raise ConfigError(f"`{where}.flow.S` needs one entry per flow level (L = {config.L}): how many of the "
                          f"level's last coupling steps read the noise level, e.g. {[0] + [16] * (config.L - 1)}")
    if config.std_channels not in STD_CHANNELS:
        raise ConfigError(f"`{where}.flow.std_channels` must be 1 or 3 (the noise level as one value or a colour "
                          f"map), got {config.std_channels or 'nothing'}")
    return config
