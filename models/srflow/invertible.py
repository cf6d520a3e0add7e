"""The contract every flow layer keeps, stated once (after FrEIA's InvertibleModule)."""
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from models.srflow.conditioning import Features


class FlowCond(NamedTuple):
    """What a flow layer may read besides its input: one per flow level, each layer reads what it needs.

    `features`: the level's conditioning (from the RRDB), read by the couplings.
    `epses`: a split's latents. Encode appends the eps it factors out (when a list); decode pops the last one
    (when a non-empty list), else draws it at temperature `eps_std`.
    `std`: NCSR's noise level (per image, or a noise map), read by the couplings that condition on it.
    """
    features: Optional[Features] = None
    epses: Optional[List[torch.Tensor]] = None
    eps_std: Optional[float] = None
    std: Optional[torch.Tensor] = None  # NCSR's noise level, read by its couplings


NO_COND = FlowCond()


def start_logdet(x: torch.Tensor, logdet: Optional[torch.Tensor]) -> torch.Tensor:
    """`logdet`, or per-sample zeros when the caller does not track one."""
    return x.new_zeros(x.shape[0]) if logdet is None else logdet


class InvertibleLayer(nn.Module):
    """A bijection x <-> y and J = log|det dy/dx|, one value per sample:

        forward(x, logdet, reverse=False, cond) -> (y, logdet + J)     implemented by `encode`
        forward(y, logdet, reverse=True, cond)  -> (x, logdet - J)     implemented by `decode`

    so that decode(encode(x)) == x and J_forward == -J_reverse (tests/test_srflow_layers.py checks both for
    every layer, and J against autograd's Jacobian). `logdet` None starts from zeros. `cond` is the level's
    `FlowCond`; a layer reads what it needs from it and ignores the rest, so a stack of layers calls each of
    them the same way. Split2d's J also holds the prior log-density of the latents it factors out, as in the
    official code: its logdet is that of the whole map from x to (kept channels, eps) under the prior.
    """

    def forward(self, x: torch.Tensor, logdet: Optional[torch.Tensor] = None, reverse: bool = False,
                cond: FlowCond = NO_COND) -> Tuple[torch.Tensor, torch.Tensor]:
        logdet = start_logdet(x, logdet)
        return self.decode(x, logdet, cond) if reverse else self.encode(x, logdet, cond)

    def encode(self, x: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, y: torch.Tensor, logdet: torch.Tensor, cond: FlowCond) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def recomputable(self) -> bool:
        """Whether a training encode may run again in the backward pass (gradient checkpointing): not where it
        has a side effect, such as appending to `cond.epses` or initialising an ActNorm from this batch."""
        return False
