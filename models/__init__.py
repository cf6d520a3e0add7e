"""Networks, built by name from a recipe's `networks.<name>` section."""
import math

from torch import nn

from utils.dist import unwrap
from utils.errors import ConfigError
from utils.recipe_keys import REQUIRED, Key, Mapping, Variant, declare_section
from utils.registry import Registry

NETWORKS = Registry("network")
NETWORK_KEYS = {  # of every `networks.<name>` section
    "type": Key(str, "generator", "the network's role: generator"),
    "which_model_G": Key(str, REQUIRED, "the network (see below)"),
}
declare_section("networks", Mapping(Variant("which_model_G", NETWORKS, NETWORK_KEYS), "networks by name"))

# Imported after NETWORKS exists: these modules register themselves in it.
from models import rrdb  # noqa: E402,F401
from models.srflow.srflow_net import SRFlowNet  # noqa: E402
from models.srflow import ncsr_net  # noqa: E402,F401
from models.srflow import layout  # noqa: E402,F401  (registers SRFlow's recogniser)
from models.weights import LoadResult, load_network_weights  # noqa: E402,F401


def is_flow(net: nn.Module) -> bool:
    """Whether `net` (or the network inside a DistributedDataParallel wrapper) is an SRFlowNet."""
    return isinstance(unwrap(net), SRFlowNet)


def lr_multiple(net: nn.Module) -> int:
    """The LR sides must be multiples of this: SRFlow halves the HR image L times (SRFlow-DA-S shrinks it by the
    scale once)."""
    if not is_flow(net):
        return 1
    net = unwrap(net)
    return net.z_stride // math.gcd(net.z_stride, net.hr_factor)


def build_network(opt_net: dict, opt: dict) -> nn.Module:
    """The network named by `opt_net['which_model_G']`, built from its section and the whole recipe."""
    if "which_model_G" not in opt_net:
        raise ConfigError(f"network section needs `which_model_G` (one of: {', '.join(NETWORKS.names())})")
    return NETWORKS.get(opt_net["which_model_G"], "which_model_G")(opt_net, opt)
