"""Networks, built by name from a recipe's `networks.<name>` section."""
import math

from torch import nn

from utils.dist import unwrap
from utils.errors import ConfigError, closest
from utils.recipe_keys import REQUIRED, Key, Mapping, Variant, declare_section
from utils.registry import Registry

NETWORKS = Registry("network")  # generators, by `which_model_G`
DISCRIMINATORS = Registry("discriminator")  # by `which_model_D`
def _check_role(value: str, where: str) -> str:
    if value not in NETWORK_ROLES:  # each role is picked in turn by its own key (below)
        raise ConfigError(f"`{where}` must be generator or discriminator, got `{value}`"
                          f"{closest(value, NETWORK_ROLES)}")
    return value


NETWORK_TYPE = {"type": Key(str, "generator", "the network's role: generator or discriminator", check=_check_role)}
NETWORK_KEYS = {  # of every `networks.<name>` section of type generator
    **NETWORK_TYPE, "which_model_G": Key(str, REQUIRED, "the network (see below)"),
}
DISCRIMINATOR_KEYS = {  # of every `networks.<name>` section of type discriminator
    **NETWORK_TYPE, "which_model_D": Key(str, REQUIRED, "the discriminator (see below)"),
}
NETWORK_ROLES = {"generator": Variant("which_model_G", NETWORKS, NETWORK_KEYS),
                 "discriminator": Variant("which_model_D", DISCRIMINATORS, DISCRIMINATOR_KEYS)}
declare_section("networks", Mapping(Variant("type", NETWORK_ROLES, NETWORK_TYPE), "networks by name"))

# Imported after the registries exist: these modules register themselves in them.
from models import discriminators, rrdb  # noqa: E402,F401
from models.srflow.srflow_net import SRFlowNet  # noqa: E402
from models.srflow import ncsr_net  # noqa: E402,F401
from models.srflow import layout, successor_layout  # noqa: E402,F401  (register the SRFlow family's recognisers)
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
    """The network named by `opt_net['which_model_G']` (`which_model_D` for `type: discriminator`), built
    from its section and the whole recipe."""
    kind = _check_role(opt_net.get("type", "generator"), "type")
    role = NETWORK_ROLES[kind]
    if role.key not in opt_net:
        raise ConfigError(f"network section needs `{role.key}` (one of: {', '.join(role.names())})")
    registry = DISCRIMINATORS if kind == "discriminator" else NETWORKS
    return registry.get(opt_net[role.key], role.key)(opt_net, opt)
