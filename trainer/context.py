"""What the trainer shares with its steps, injectors, losses and evaluators."""
from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn


@dataclass
class RunContext:
    opt: Dict[str, Any]  # the parsed recipe
    networks: Dict[str, nn.Module]  # by recipe name; trainable ones may be wrapped in DDP
    device: torch.device
    iteration: int = 0  # the current iteration (1-based while training)
    training: bool = True  # False while evaluators run the injectors (image_patch then passes whole images)
