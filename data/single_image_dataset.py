"""mode `single_image_extensible`: random square crops of HQ images, LQ made by MATLAB bicubic downscaling
and, when the recipe asks, corrupted (data/degradations.py)."""
from pathlib import Path
from typing import Dict, List, Optional, Set

import numpy as np
from torch.utils.data import Dataset

from data.degradations import build_corruptor, CORRUPTION_KEYS
from data.image_folder import list_images, load_or_substitute, usable_images
from data.imresize import imresize
from data.options import folders, positive_int
from data.sampler import SampleKey, split_key
from data.transforms import flip_and_rotate
from utils.errors import ConfigError
from utils.image import img2tensor, read_image
from utils.recipe_keys import REQUIRED, STR_OR_LIST, TEXT, Key


KEYS = {
    "paths": Key(STR_OR_LIST, REQUIRED, "folder(s) of HQ images (`builtin:skimage_photos/train`: the bundled ones)",
                 path="dir", items=TEXT),
    "target_size": Key(int, REQUIRED, "side of the square HQ crops", at_least=1),
    "eval": Key(bool, False, "true: centred crops, no flips (the same pixels at every pass)"),
    "strict": Key(bool, True, "accepted for DLAS's recipes (its tile metadata); no effect"),
    "use_flip": Key(bool, True, "random horizontal flips"), "use_rot": Key(bool, True, "random 90-degree rotations"),
    **CORRUPTION_KEYS,
}


class SingleImageDataset(Dataset):
    """Items {'hq': 3 x T x T, 'lq': 3 x T/scale x T/scale, 'hq_path': str}, float32 in [0, 1], T = target_size.

    Each item draws a random crop, flips (`use_flip`) and 90-degree rotation (`use_rot`) from its key's seed
    (see data/sampler.py: a training key carries one, a plain index is its own, so validation sees the same
    pixels every pass); `eval: true` takes the centre crop and no augmentation.
    Without `target_size` the whole image is used, trimmed to a multiple of scale * force_multiple.
    Images smaller than needed or unreadable are skipped with a warning (when validating, files are decoded
    whole at build time, so one cut short is skipped too). One item per image per epoch.
    `num_corrupts_per_image`, `random_corruptions`, `fixed_corruptions`, `corruption_blur_scale`: corruptions of
    the LQ, drawn from the same seeded generator.
    Accepted and unused: `strict` (DLAS tile metadata), `quant` (read by the network).
    """

    def __init__(self, opt: dict):
        self.scale = positive_int(opt, "scale")
        self.multiple = self.scale * positive_int(opt, "force_multiple", 1)
        self.target_size = None if opt.get("target_size") is None else positive_int(opt, "target_size")
        if self.target_size and self.target_size % self.multiple:
            raise ConfigError(f"`target_size` {self.target_size} must be a multiple of scale * force_multiple "
                              f"= {self.multiple}")
        self.corrupt = build_corruptor(opt)
        self.eval = bool(opt.get("eval", False))
        self.use_flip = not self.eval and opt.get("use_flip", True)
        self.use_rot = not self.eval and opt.get("use_rot", True)
        self.cache: Optional[Dict[int, np.ndarray]] = {} if opt.get("cache", False) else None
        self.min_size = self.target_size or self.multiple
        self.files: List[Path] = usable_images(list_images(folders(opt, "paths"), "paths"), (self.min_size,) * 2,
                                               decode=opt.get("phase") == "val")
        if not self.files:
            raise ConfigError(f"`paths`: no usable images: each is unreadable or too small; the smallest size that "
                              f"works is {self.min_size}x{self.min_size} (HQ pixels: "
                              f"{'target_size' if self.target_size else 'scale * force_multiple'}); the warnings "
                              "above name each file")
        self._bad: Set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> np.ndarray:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        img = read_image(self.files[i])
        if min(img.shape[:2]) < self.min_size:
            raise ValueError(f"{img.shape[0]}x{img.shape[1]} is smaller than {self.min_size}x{self.min_size}")
        if self.cache is not None:
            self.cache[i] = img
        return img

    def _crop(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        th, tw = (self.target_size,) * 2 if self.target_size else (h - h % self.multiple, w - w % self.multiple)
        if self.eval:
            top, left = (h - th) // 2, (w - tw) // 2
        else:
            top, left = rng.integers(h - th + 1), rng.integers(w - tw + 1)
        return flip_and_rotate([img[top:top + th, left:left + tw]], rng, self.use_flip, self.use_rot)[0]

    def __getitem__(self, key: SampleKey) -> dict:
        index, seed = split_key(key, len(self))
        rng = np.random.default_rng(seed)
        index, img = load_or_substitute(index, self.files, lambda i: (i, self._load(i)), self._bad)
        hq = self._crop(img, rng)
        lq = np.clip(imresize(hq, scale=1 / self.scale), 0, 1)  # bicubic overshoot; real LQ files are in range
        if self.corrupt:
            lq = self.corrupt(lq, rng)
        return {"hq": img2tensor(hq), "lq": img2tensor(lq), "hq_path": str(self.files[index])}
