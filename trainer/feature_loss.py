"""The `feature` loss (`which_model_F: vgg`): ESRGAN's perceptual loss, the distance between the VGG19
conv5_4 features (before the activation) of `fake` and of `real`, on ImageNet-normalised inputs.

The weights are torchvision's, read from its cache ($TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth) or from
`load_path`; the recipe check refuses a recipe whose file is missing, since nothing is downloaded.
"""
from pathlib import Path
from typing import Any, Dict, List

import torch

from models.vgg_features import VGGFeatures, cached_weights, missing_weights_message
from trainer.losses import CRITERIA, LOSSES, Loss
from utils.errors import ConfigError
from utils.recipe_keys import REQUIRED, Key, recipe_rule

KEYS = {
    "which_model_F": Key(str, "vgg", "the feature network: vgg (VGG19 conv5_4, before the activation)"),
    "criterion": Key(str, "l1", "l1, l2 or charbonnier"),
    "real": Key(str, REQUIRED, "state key of the target image"),
    "fake": Key(str, REQUIRED, "state key of the output"),
    "load_path": Key(str, None, "VGG19 weights (default: torchvision's cache file; nothing is downloaded)"),
}


def weights_path(opt: Dict[str, Any]) -> Path:
    return Path(opt["load_path"]).expanduser() if opt.get("load_path") else cached_weights()


@recipe_rule(reads_files=True)
def check_weights(opt: Dict[str, Any]) -> List[str]:
    """Every feature loss has its VGG19 weights on disk."""
    problems = []
    for step_name, step in opt["steps"].items():
        for name, loss in step["losses"].items():
            if loss.get("type") != "feature":
                continue
            where = f"steps.{step_name}.losses.{name}"
            if loss["which_model_F"] != "vgg":
                problems.append(f"`{where}.which_model_F` must be `vgg`, got `{loss['which_model_F']}`")
            elif not weights_path(loss).is_file():
                problems.append(missing_weights_message(where, weights_path(loss)))
    return problems



@LOSSES.register("feature", keys=KEYS)
class FeatureLoss(Loss):
    def __init__(self, name: str, opt: Dict[str, Any], env: Any):
        super().__init__(name, opt, env)
        if opt["criterion"] not in ("l1", "l2"):
            raise ConfigError(f"loss `{name}`: criterion `{opt['criterion']}` is not supported; known: l1, l2")
        self.criterion = CRITERIA[opt["criterion"]]
        path = weights_path(opt)
        if not path.is_file():
            raise ConfigError(missing_weights_message(f"loss {name}", path))
        self.vgg = VGGFeatures(path).to(env.device)

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            real = self.vgg(self.read(state, self.opt["real"]))
        fake = self.vgg(self.read(state, self.opt["fake"]))
        return self.criterion(fake.float(), real.float())
