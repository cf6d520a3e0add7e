"""Exponential moving average of a network's weights (`train.ema_decay`), used for validation when on."""
import copy
from typing import Dict

import torch
from torch import nn


class EMA:
    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, iteration: int) -> None:
        # Early on the average would mostly hold the random initial weights: ramp the decay up with the
        # iteration (as TensorFlow's ExponentialMovingAverage with num_updates does).
        decay = min(self.decay, (1 + iteration) / (10 + iteration))
        for key, value in net.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].lerp_(value, 1 - decay)
            else:
                self.shadow[key].copy_(value)

    def swap_into(self, net: nn.Module) -> Dict[str, torch.Tensor]:
        """Load the averaged weights into `net`; returns its own weights for `restore`."""
        original = copy.deepcopy(net.state_dict())
        net.load_state_dict(self.shadow)
        return original

    @staticmethod
    def restore(net: nn.Module, original: Dict[str, torch.Tensor]) -> None:
        net.load_state_dict(original)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
