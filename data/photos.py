"""The colour photos shipped inside scikit-image, written out as PNGs, so demos train with no download.

Recipes name them with the path value `builtin:skimage_photos/train` or `builtin:skimage_photos/val`.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

import skimage.data

from utils.errors import ConfigError, closest
from utils.image import write_image

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILTIN_PREFIX = "builtin:"
# Photos (RGB, >= 300 px a side) that are files inside the scikit-image wheel, so loading never downloads.
# Validation uses lossless PNG originals only: JPEG block artefacts in a ground truth penalise any sharp SR.
TRAIN_PHOTOS = ("astronaut", "hubble_deep_field", "immunohistochemistry", "rocket", "stereo_motorcycle")
VAL_PHOTOS = ("chelsea", "coffee")
SPLITS = (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS))


def _photo(name: str):
    img = getattr(skimage.data, name)()
    return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle -> (left, right, disparity)


def bundled_photos_dir(root: Union[str, Path] = "datasets/skimage_photos") -> Path:
    """Folder holding train/ and val/ PNGs of the bundled photos, written on first use.

    A relative `root` is taken from the repository root. The folder appears atomically (written in a
    temporary folder, then renamed), so an interrupted or concurrent first use never leaves half of it.
    """
    root = Path(root)
    root = root if root.is_absolute() else REPO_ROOT / root
    if all((root / split / f"{name}.png").is_file() for split, names in SPLITS for name in names):
        return root
    if root.is_dir():  # written by an older version with another split
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for split, names in SPLITS:
            for name in names:
                write_image(tmp / split / f"{name}.png", _photo(name))
        os.rename(tmp, root)
    except OSError:
        if not root.is_dir():  # a concurrent first use that won the rename is fine; anything else is not
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def resolve_data_path(value: Union[str, Path]) -> Path:
    """Map `builtin:skimage_photos/<split>` to the materialised folder; any other value is returned as a Path."""
    text = str(value)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(text)
    known = [f"{BUILTIN_PREFIX}skimage_photos/{split}" for split in ("train", "val")]
    if text not in known:
        raise ConfigError(f"unknown data path `{text}`{closest(text, known)}; known: {', '.join(known)}")
    return bundled_photos_dir() / text.rsplit("/", 1)[1]
