"""Whole images for validation and testing (modes `fullimage`, `paired`, `lq_folder`), and aligned random crops
of HQ/LQ pairs for training (mode `paired` with `target_size`)."""
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from torch.utils.data import Dataset

from data.degradations import CORRUPTION_KEYS, build_corruptor
from data.image_folder import image_size, list_images, load_or_substitute, usable_images, warn_skip
from data.imresize import imresize
from data.options import folders, positive_int
from data.sampler import SampleKey, split_key
from data.transforms import flip_and_rotate
from utils.errors import ConfigError
from utils.image import img2tensor, read_image
from utils.recipe_keys import REQUIRED, STR_OR_LIST, TEXT, Key

Pair = Tuple[Optional[Path], Optional[Path]]  # (HQ file, LQ file); either may be absent


KEYS = {
    "dataroot_GT": Key(STR_OR_LIST, None, "folder(s) of whole HQ images (DLAS's name)", path="dir", items=TEXT),
    "paths": Key(STR_OR_LIST, None, "the same, under the name mode single_image_extensible uses", path="dir",
                 items=TEXT),
    "dataroot_LQ": Key(str, None, "folder of LQ images matching the HQ ones by name (default: downscaled HQ)",
                       path="dir"),
    **CORRUPTION_KEYS,
}


class FullImageDataset(Dataset):
    """mode `fullimage`. Images are cropped from the top-left so the LQ side is a multiple of force_multiple.

    - `dataroot_GT` (or `paths`) only: LQ made by MATLAB bicubic downscaling of the cropped HQ.
      Items {'hq', 'lq', 'hq_path'}.
    - `dataroot_GT` and `dataroot_LQ`: files paired by stem (an LQ stem may also end in x<scale>, as DIV2K's
      do); the LQ must be HQ/scale. Items {'hq', 'lq', 'hq_path', 'lq_path'}.
    - `dataroot_LQ` only (also mode `lq_folder`): items {'lq', 'lq_path'}.
    Tensors are float32 3xHxW in [0, 1]. Corruption keys (data/degradations.py) corrupt the LQ, drawn from the
    item's key's seed (a plain index is its own: the same pixels at every pass).
    With `target_size` (mode `paired`): a random target_size square of the HQ image and the LQ square at the same
    place, with the same flips and rotation (`use_flip`, `use_rot`), drawn from the item's seed; `eval: true`
    takes the centre squares and no augmentation.
    Unusable images are skipped with a warning; when validating, files are decoded whole at build time.
    """

    def __init__(self, opt: dict):
        self.scale = positive_int(opt, "scale")
        self.multiple = positive_int(opt, "force_multiple", 1)
        self.target_size = None if opt.get("target_size") is None else positive_int(opt, "target_size")
        if self.target_size and self.target_size % (self.scale * self.multiple):
            raise ConfigError(f"`target_size` {self.target_size} must be a multiple of scale * force_multiple "
                              f"= {self.scale * self.multiple}")
        self.min_lq = self.target_size // self.scale if self.target_size else self.multiple
        self.eval = bool(opt.get("eval", False))
        self.decode = opt.get("phase") == "val"  # small sets: find files that are cut short before the first pass
        self.use_flip = not self.eval and opt.get("use_flip", True)
        self.use_rot = not self.eval and opt.get("use_rot", True)
        self.corrupt = build_corruptor(opt)
        hq_key = next((k for k in ("dataroot_GT", "paths") if opt.get(k) is not None), None)
        lq_key = "dataroot_LQ" if opt.get("dataroot_LQ") is not None else None
        if hq_key is None and lq_key is None:
            raise ConfigError("`dataroot_GT` (or `paths`) or `dataroot_LQ` is required")
        hq = list_images(folders(opt, hq_key), hq_key) if hq_key else []
        lq = list_images(folders(opt, lq_key), lq_key) if lq_key else []
        if hq and lq:
            self.pairs: List[Pair] = self._pair(hq, lq)
        elif hq:
            self.pairs = [(p, None) for p in usable_images(hq, (self.min_lq * self.scale,) * 2, self.decode)]
        else:
            self.pairs = [(None, p) for p in usable_images(lq, (self.min_lq, self.min_lq), self.decode)]
        if not self.pairs:
            side = self.min_lq * (self.scale if hq_key else 1)
            raise ConfigError(f"`{hq_key or lq_key}`: no usable images: each is unreadable or too small; the smallest "
                              f"size that works is {side}x{side} ({'HQ' if hq_key else 'LQ'} pixels, at scale "
                              f"{self.scale}{' and force_multiple ' + str(self.multiple) if self.multiple > 1 else ''}"
                              f"{' and target_size ' + str(self.target_size) if self.target_size else ''}); the "
                              "warnings above name each file")
        self._names = [hq or lq for hq, lq in self.pairs]
        self._bad: Set[int] = set()

    def _pair(self, hq: Sequence[Path], lq: Sequence[Path]) -> List[Pair]:
        hq_by_stem = _by_stem(hq, "dataroot_GT")
        suffix = f"x{self.scale}"
        lq_by_stem = _by_stem(lq, "dataroot_LQ", lambda s: s[:-len(suffix)] if s.endswith(suffix)
                              and s[:-len(suffix)] in hq_by_stem else s)
        for stem, path in hq_by_stem.items():
            if stem not in lq_by_stem:
                raise ConfigError(f"`dataroot_LQ` has no image named {stem} to pair with {path}")
        for stem, path in lq_by_stem.items():
            if stem not in hq_by_stem:
                raise ConfigError(f"`dataroot_GT` has no image named {stem} to pair with {path}")
        pairs = []
        for stem, hq_path in hq_by_stem.items():
            lq_path = lq_by_stem[stem]
            try:
                (hh, hw), (lh, lw) = image_size(hq_path, self.decode), image_size(lq_path, self.decode)
            except ValueError as e:
                warn_skip(hq_path, f"it or its partner {lq_path} is unreadable ({e})")
                continue
            allowed = lambda n: (n // self.scale, math.ceil(n / self.scale))  # MATLAB rounds the size up
            if lh not in allowed(hh) or lw not in allowed(hw):
                raise ConfigError(f"{lq_path} is {lh}x{lw} but {hq_path} is {hh}x{hw}: with scale {self.scale} "
                                  f"the LQ image must be {hh // self.scale}x{hw // self.scale}")
            if min(hh // self.scale, hw // self.scale) < self.min_lq:
                warn_skip(hq_path, f"smaller than {self.min_lq * self.scale}x{self.min_lq * self.scale}")
                continue
            pairs.append((hq_path, lq_path))
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int) -> Dict[str, np.ndarray]:
        hq_path, lq_path = self.pairs[i]
        s, m = self.scale, self.multiple
        hq = read_image(hq_path) if hq_path else None
        lq = read_image(lq_path) if lq_path else None
        if lq is None:
            h, w = hq.shape[0] // s, hq.shape[1] // s
        elif hq is None:
            h, w = lq.shape[:2]
        else:
            h, w = min(lq.shape[0], hq.shape[0] // s), min(lq.shape[1], hq.shape[1] // s)
        h, w = h - h % m, w - w % m
        if h == 0 or w == 0:
            raise ValueError(f"smaller than scale * force_multiple = {s * m}")
        if hq is not None:
            hq = hq[:h * s, :w * s]
        if lq is None:
            lq = np.clip(imresize(hq, scale=1 / s), 0, 1)
        item = {"lq": lq[:h, :w]}
        if hq is not None:
            item["hq"] = hq
        return item

    def _crop(self, arrays: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """The same place, flips and rotation in the LQ and (scaled) in the HQ image."""
        t, s = self.target_size // self.scale, self.scale
        h, w = arrays["lq"].shape[:2]
        if self.eval:
            top, left = (h - t) // 2, (w - t) // 2
        else:
            top, left = rng.integers(h - t + 1), rng.integers(w - t + 1)
        crops = {"lq": arrays["lq"][top:top + t, left:left + t]}
        if "hq" in arrays:
            crops["hq"] = arrays["hq"][top * s:(top + t) * s, left * s:(left + t) * s]
        return dict(zip(crops, flip_and_rotate(crops.values(), rng, self.use_flip, self.use_rot)))

    def __getitem__(self, key: SampleKey) -> dict:
        index, seed = split_key(key, len(self))
        rng = np.random.default_rng(seed)
        index, arrays = load_or_substitute(index, self._names, lambda i: (i, self._load(i)), self._bad)
        if self.target_size:
            arrays = self._crop(arrays, rng)
        if self.corrupt:
            arrays["lq"] = self.corrupt(arrays["lq"], rng)
        item = {k: img2tensor(v) for k, v in arrays.items()}
        hq_path, lq_path = self.pairs[index]
        if hq_path:
            item["hq_path"] = str(hq_path)
        if lq_path:
            item["lq_path"] = str(lq_path)
        return item


PAIRED_KEYS = {
    "dataroot_GT": Key(str, REQUIRED, "folder of HQ images", path="dir"),
    "dataroot_LQ": Key(str, REQUIRED, "folder of their LQ images, matched by name", path="dir"),
    "target_size": Key(int, None, "side of aligned random HQ crops (absent: whole images)", at_least=1),
    "eval": Key(bool, False, "true: centred crops, no flips"), "use_flip": Key(bool, True, "random flips"),
    "use_rot": Key(bool, True, "random 90-degree rotations"),
}


class PairedImageDataset(FullImageDataset):
    """mode `paired`: `fullimage` with both `dataroot_GT` and `dataroot_LQ` required, and `target_size` too
    when training (whole images of different sizes cannot be batched)."""

    def __init__(self, opt: dict):
        for key in ("dataroot_GT", "dataroot_LQ"):
            if opt.get(key) is None:
                raise ConfigError(f"`{key}` is required in mode `paired`")
        if opt.get("phase") == "train" and opt.get("target_size") is None:
            raise ConfigError("`target_size` (the HQ crop size) is required to train in mode `paired`")
        super().__init__(opt)


LQ_FOLDER_KEYS = {
    "dataroot_LQ": Key(STR_OR_LIST, REQUIRED, "folder(s) of LR images to super-resolve, or images (no HQ)",
                       path="any", items=TEXT),
}


class LQFolderDataset(FullImageDataset):
    """mode `lq_folder`: the LQ images of `dataroot_LQ` alone, for super-resolving a user's folder."""

    def __init__(self, opt: dict):
        if opt.get("dataroot_LQ") is None:
            raise ConfigError("`dataroot_LQ` is required in mode `lq_folder`")
        super().__init__({k: v for k, v in opt.items() if k not in ("dataroot_GT", "paths")})


def _by_stem(files: Sequence[Path], key: str, stem_of=lambda s: s) -> Dict[str, Path]:
    """{stem: file}; two files with the same stem are an error, since pairing would be ambiguous."""
    out: Dict[str, Path] = {}
    for path in files:
        stem = stem_of(path.stem)
        if stem in out:
            raise ConfigError(f"`{key}`: {out[stem]} and {path} have the same name; pairing needs unique names")
        out[stem] = path
    return out
