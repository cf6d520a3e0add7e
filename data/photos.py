"""The colour photos shipped inside scikit-image, written out as PNGs, so demos train with no download.

Recipes name them with the path value `builtin:skimage_photos/train` or `builtin:skimage_photos/val`.
"""
import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import skimage.data

from utils.errors import ConfigError, closest
from utils.image import to_uint8, write_image
from utils.options import BUILTIN_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every colour photo that is a file inside the scikit-image wheel (so loading never downloads), validation's
# excepted; stereo_motorcycle is its left view (the right one shows the same scene). Not photos, so not here:
# colorwheel, logo. Validation uses lossless PNG originals only: JPEG block artefacts in a ground truth penalise
# any sharp SR.
TRAIN_PHOTOS = ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "rocket", "stereo_motorcycle")
VAL_PHOTOS = ("chelsea", "coffee")
SPLITS = (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS))


def _photo(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    return to_uint8(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle -> (left, right, disparity)


def _is_our_copy(path: Path, name: str) -> bool:
    """Whether `path` holds exactly the pixels this module writes for photo `name`."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return raw is not None and raw.ndim == 3 and np.array_equal(raw[:, :, ::-1], _photo(name))


def bundled_photos_dir(root: Union[str, Path] = "datasets/skimage_photos") -> Path:
    """Folder holding train/ and val/ PNGs of the bundled photos; missing ones are written on use.

    A relative `root` is taken from the repository root. Each photo is written atomically (a temporary file,
    then a rename), so an interrupted or concurrent use never leaves half a file. Nothing else in the folder
    is touched, except a copy of a bundled photo in a split it no longer belongs to (SPLITS changed between
    versions), which would leak validation photos into training: it is removed when its pixels are exactly
    the photo's, and left with a warning when they are not (then the user's file, not ours).
    """
    root = Path(root)
    root = root if root.is_absolute() else REPO_ROOT / root
    for split, names in SPLITS:
        for name in names:
            if not (root / split / f"{name}.png").is_file():
                write_image(root / split / f"{name}.png", _photo(name))
    for split, names in SPLITS:
        for other, others in SPLITS:
            for name in set(others) - set(names):
                _remove_stale(root / split / f"{name}.png", name, split, other)
    return root


def _remove_stale(path: Path, name: str, split: str, home: str) -> None:
    """Remove our copy of photo `name` from a split it has left for `home`; warn about a file that is not ours."""
    if not path.is_file():
        return
    if _is_our_copy(path, name):
        path.unlink(missing_ok=True)  # a concurrent first use may have removed it already
    else:
        warnings.warn(f"{path} is not the bundled photo `{name}` (which now belongs to {home}/), so it stays "
                      f"and is used as a {split} image; remove it if that is not intended")


def resolve_data_path(value: Union[str, Path]) -> Path:
    """Map `builtin:skimage_photos/<split>` to the materialised folder; any other value is returned as a Path."""
    text = str(value)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(text)
    known = [f"{BUILTIN_PREFIX}skimage_photos/{split}" for split in ("train", "val")]
    if text not in known:
        raise ConfigError(f"unknown data path `{text}`{closest(text, known)}; known: {', '.join(known)}")
    return bundled_photos_dir() / text.rsplit("/", 1)[1]
