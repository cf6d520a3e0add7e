"""The `translational` loss (DLAS's): the generator must give the same pixels for the same place whether it
sees the top-left LR patch or a neighbouring corner patch that overlaps it.

`real` is the generator's output on the top-left patch; `fake` lists the generator's inputs, the one at
`input_alteration_index` being an `image_patch` output, whose `_top_right`, `_bottom_left` or
`_bottom_right` corner (one at random each time) is fed to `generator` instead. The two outputs are compared
where they overlap: `overlap` HR pixels of `patch_size`, i.e. the crop is 2 * patch_size - overlap wide.
"""
from typing import Any, Dict

import torch

from trainer.losses import CRITERIA, LOSSES, Loss
from utils.errors import ConfigError
from utils.recipe_keys import REQUIRED, TEXT, Key

KEYS = {
    "generator": Key(str, REQUIRED, "the generator fed the corner patches", names=("networks", "network")),
    "criterion": Key(str, "l1", "l1, l2 or charbonnier"),
    "real": Key(str, REQUIRED, "state key of the generator's output on the top-left patch"),
    "fake": Key(list, REQUIRED, "the generator's inputs (state keys), one of them an image_patch output", items=TEXT),
    "patch_size": Key(int, REQUIRED, "the HR side of the generator's output on a patch", at_least=1),
    "overlap": Key(int, REQUIRED, "HR pixels where two neighbouring patches overlap", at_least=1),
    "detach_fake": Key(bool, False, "no gradient through the corner patch's output"),
    "generator_output_index": Key(int, None, "which output of the generator (when it returns several)", at_least=0),
    "input_alteration_index": Key(int, 0, "which of `fake` is the image_patch output", at_least=0),
}
CORNERS = ("top_right", "bottom_left", "bottom_right")


@LOSSES.register("translational", keys=KEYS)
class TranslationalLoss(Loss):
    def __init__(self, name: str, opt: Dict[str, Any], env: Any):
        super().__init__(name, opt, env)
        if opt["overlap"] >= opt["patch_size"]:
            raise ConfigError(f"loss `{name}`: overlap ({opt['overlap']}) must be smaller than patch_size "
                              f"({opt['patch_size']})")
        if opt["criterion"] not in ("l1", "l2"):
            raise ConfigError(f"loss `{name}`: criterion `{opt['criterion']}` is not supported; known: l1, l2")
        if opt["input_alteration_index"] >= len(opt["fake"]):
            raise ConfigError(f"loss `{name}`: input_alteration_index {opt['input_alteration_index']} is past "
                              f"the end of `fake` {opt['fake']}")
        self.criterion = CRITERIA[opt["criterion"]]

    def __call__(self, state: Dict[str, Any]) -> torch.Tensor:
        size, overlap = self.opt["patch_size"], self.opt["overlap"]
        border = size - overlap
        corner = CORNERS[int(torch.randint(len(CORNERS), ()))]
        # Where the shared region lies in the corner patch's output (the top-left one has it at border:).
        rows = slice(0, overlap) if corner.startswith("bottom") else slice(border, size)
        cols = slice(0, overlap) if corner.endswith("right") else slice(border, size)
        keys = list(self.opt["fake"])
        index = self.opt["input_alteration_index"]
        keys[index] = f"{keys[index]}_{corner}"
        inputs = [None if k == "None" else self.read(state, k) for k in keys]
        net = self.env.networks[self.opt["generator"]]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.opt["detach_fake"]):
            shifted = net(*inputs)
        if self.opt.get("generator_output_index") is not None and isinstance(shifted, (list, tuple)):
            shifted = shifted[self.opt["generator_output_index"]]  # a network with one output has no index
        reference = self.read(state, self.opt["real"])[..., border:size, border:size]
        return self.criterion(shifted[..., rows, cols].float(), reference.float())
