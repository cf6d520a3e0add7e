"""The log-density of a diagonal Gaussian: the prior of every latent of the flow (and of the evaluators' numbers)."""
import math
from typing import Optional

import torch

LOG_2PI = math.log(2 * math.pi)


def gaussian_logp(x: torch.Tensor, mean: Optional[torch.Tensor] = None,
                  logs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample log N(x; mean, exp(logs)^2) summed over C, H, W (standard normal when mean/logs are None),
    in x's dtype; the official code's arithmetic."""
    if mean is None:
        density = -0.5 * (x ** 2 + LOG_2PI)
    else:
        density = -0.5 * (logs * 2.0 + (x - mean) ** 2 / torch.exp(logs * 2.0) + LOG_2PI)
    return density.sum(dim=(1, 2, 3))
