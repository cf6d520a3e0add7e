"""The `image_patch` injector: a square patch of an image, cut at the same place in the LR and HR images.

While training, `out` is the top-left `patch_size` square (colour channels only), and `<out>_top_left`,
`_top_right`, `_bottom_left`, `_bottom_right` are the four corner squares, which the `translational` loss
compares. An LR patch of side p and an HR patch of side p * scale are aligned because both start at the
top-left corner. During evaluation every output is the whole image. `resize` scales the outputs to a
square of that side (nearest neighbour), as DLAS does.
"""
from typing import Any, Dict

import torch.nn.functional as F

from trainer.injectors import INJECTORS, Injector
from utils.errors import ConfigError
from utils.recipe_keys import REQUIRED, Key

KEYS = {
    "patch_size": Key(int, REQUIRED, "the side of the square patches", at_least=1),
    "resize": Key(int, None, "resize the patches to a square of this side (nearest neighbour)", at_least=1),
}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@INJECTORS.register("image_patch", keys=KEYS)
class ImagePatchInjector(Injector):
    def __call__(self, state: Dict[str, Any]) -> Dict[str, Any]:
        image, out, p = self.lookup(self.opt["in"], state), self.opt["out"], self.opt["patch_size"]
        if not self.env.training:
            patches = {out: image, **{f"{out}_{c}": image for c in CORNERS}}
        else:
            h, w = image.shape[-2:]
            if min(h, w) < p:
                raise ConfigError(f"injector `{self.name}`: patch_size {p} is larger than its {h}x{w} input "
                                 f"`{self.opt['in']}`; lower it or crop larger (datasets.train.target_size)")
            patches = {out: image[:, :3, :p, :p], f"{out}_top_left": image[..., :p, :p],
                       f"{out}_top_right": image[..., :p, -p:], f"{out}_bottom_left": image[..., -p:, :p],
                       f"{out}_bottom_right": image[..., -p:, -p:]}
        if self.opt.get("resize"):
            size = (self.opt["resize"],) * 2
            patches = {k: F.interpolate(v, size=size, mode="nearest") for k, v in patches.items()}
        return patches
