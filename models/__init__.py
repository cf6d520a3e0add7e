"""Networks, built by name from a recipe's `networks.<name>` section."""
import math

from torch import nn

from utils.dist import unwrap
from utils.errors import ConfigError
from utils.registry import Registry

NETWORKS = Registry("network")

# Imported after NETWORKS exists: these modules register themselves in it.
from models import discriminators, rrdb  # noqa: E402,F401
from models.srflow.srflow_net import SRFlowNet  # noqa: E402
from models.srflow import layout  # noqa: E402,F401  (registers SRFlow's recogniser)
from models.weights import LoadResult, load_network_weights  # noqa: E402,F401


def is_flow(net: nn.Module) -> bool:
    """Whether `net` (or the network inside a DistributedDataParallel wrapper) is an SRFlowNet."""
    return isinstance(unwrap(net), SRFlowNet)


def lr_multiple(net: nn.Module) -> int:
    """The LR sides must be multiples of this: SRFlow halves the HR image L times."""
    if not is_flow(net):
        return 1
    net = unwrap(net)
    return 2 ** net.L // math.gcd(2 ** net.L, net.hr_factor)


def build_network(opt_net: dict, opt: dict) -> nn.Module:
    """The network named by `opt_net['which_model_G']` (`which_model_D` for `type: discriminator`), built
    from its section and the whole recipe."""
    kind = opt_net.get("type", "generator")
    if kind not in ("generator", "discriminator"):
        raise ConfigError(f"network `type` must be generator or discriminator, got `{kind}`")
    key = "which_model_D" if kind == "discriminator" else "which_model_G"
    if key not in opt_net:
        raise ConfigError(f"network section needs `{key}` (one of: {', '.join(NETWORKS.names())})")
    return NETWORKS.get(opt_net[key], key)(opt_net, opt)
