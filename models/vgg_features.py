"""VGG19's ImageNet features at conv5_4, before its ReLU: ESRGAN's perceptual-loss feature space.

The layers are torchvision's `vgg19().features[:35]` with the same indices, so torchvision's weight file
(`vgg19-dcbb9e9d.pth`: keys `features.<i>.weight|bias`, and a classifier this extractor does not need)
loads as it is. Inputs are images in [0, 1], normalised with ImageNet's mean and deviation first.
Nothing is downloaded: the weights come from torchvision's cache or from a given file.
"""
from pathlib import Path
from typing import Union

import torch
from torch import nn

from utils.errors import ConfigError

WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's name for VGG19's ImageNet weights (IMAGENET1K_V1)
CONV5_4 = 34  # index of conv5_4 in torchvision's vgg19().features
LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cached_weights() -> Path:
    """Where torchvision keeps VGG19's weights: $TORCH_HOME/hub/checkpoints/ (~/.cache/torch/... by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def missing_weights_message(where: str, path: Path) -> str:
    return (f"`{where}` (the VGG19 feature loss) needs VGG19's ImageNet weights, and `{path}` does not exist: "
            f"copy torchvision's {WEIGHTS_FILE} there (on a machine that is online, `python -c \"import torchvision; "
            f"torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` downloads it to ~/.cache/torch/hub/checkpoints/), "
            f"or set {where}.load_path to the file; nothing is downloaded during a run")


def _layers() -> nn.Sequential:
    layers, channels = [], 3
    for item in LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers[:CONV5_4 + 1])  # ends on conv5_4, before its ReLU


class VGGFeatures(nn.Module):
    """Frozen VGG19 up to conv5_4 (pre-activation) on ImageNet-normalised inputs."""

    def __init__(self, weights: Union[str, Path]):
        super().__init__()
        self.features = _layers()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights))
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        saved = {k[len("module."):] if k.startswith("module.") else k: v for k, v in saved.items()}
        wanted = self.features.state_dict()
        mine = {k: saved.get(f"features.{k}") for k in wanted}
        missing = [k for k, v in mine.items() if v is None or v.shape != wanted[k].shape]
        if missing:
            raise ConfigError(f"{path} is not VGG19's weights in torchvision's layout (no matching "
                              f"`features.{missing[0]}`)")
        self.features.load_state_dict(mine)

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # always in inference mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)
