"""Find the images in folders, and drop the ones that cannot be used, warning once about each."""
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, List, Sequence, Set, Tuple, TypeVar, Union

from PIL import Image

from utils.errors import ConfigError, DataError
from utils.image import read_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

T = TypeVar("T")
_warned: Set[str] = set()  # per process: a bad file is reported once however often it is met


def warn_skip(path: Union[str, Path], reason: str) -> None:
    """Warn (once per file and process) that an image is left out."""
    if str(path) not in _warned:
        _warned.add(str(path))
        warnings.warn(f"skipping image {path}: {reason}", stacklevel=2)


def walk_files(folder: Path) -> Iterator[Path]:
    """Files under `folder`, recursively, following symbolic links to folders. A folder met a second time (a
    link loop, or two links to one folder) is walked once. Hidden names (a leading dot: temporary files of
    editors and of atomic writes, `.ipynb_checkpoints`) are left out."""
    seen: Set[Tuple[int, int]] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(root) / name for name in names if not name.startswith("."))


def list_images(folders: Sequence[Path], key: str) -> List[Path]:
    """Image files under each folder (see `walk_files`), sorted within each folder; `key` names the option in
    errors. An entry may also be a single image file.
    """
    files: List[Path] = []
    for folder in folders:
        if folder.is_file():
            files.append(folder)
        elif folder.is_dir():
            files += sorted(p for p in walk_files(folder) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            raise ConfigError(f"`{key}`: {folder} does not exist")
    if not files:
        raise ConfigError(f"`{key}`: no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, folders))}")
    return files


def image_size(path: Path, decode: bool = False) -> Tuple[int, int]:
    """(height, width) from the file header; with `decode` (or when PIL cannot read the header) from a full
    decode, which also finds files that are cut short (ValueError)."""
    if not decode:
        try:
            with Image.open(path) as im:
                return im.height, im.width
        except Exception:  # PIL does not know every format cv2 does; the full decode decides
            pass
    return read_image(path).shape[:2]


def usable_images(files: Sequence[Path], min_size: Tuple[int, int] = (1, 1), decode: bool = False) -> List[Path]:
    """The files that can be read and are at least min_size (h, w); the others are skipped with a warning.

    `decode`: decode each file whole (for small sets such as validation's, where a file found bad later would
    be replaced by another and counted twice); else the header is read and bad pixel data is found on loading.
    """
    kept = []
    for path in files:
        try:
            h, w = image_size(path, decode)
        except ValueError as e:
            warn_skip(path, f"unreadable ({e})")
            continue
        if h < min_size[0] or w < min_size[1]:
            warn_skip(path, f"{h}x{w} is smaller than the {min_size[0]}x{min_size[1]} needed")
            continue
        kept.append(path)
    return kept


def load_or_substitute(index: int, names: Sequence[Union[str, Path]], load: Callable[[int], T], bad: Set[int]) -> T:
    """load(index); if it raises ValueError, the first of index+1, index+2, ... (wrapping) that loads; none:
    DataError naming the first file that failed.

    For a file that turns out bad only when decoded: it is warned about once (named by names[i]) and
    remembered in `bad`, so a running epoch goes on with a deterministic substitute.
    """
    first = ""
    for k in range(len(names)):
        i = (index + k) % len(names)
        if i in bad:
            continue
        try:
            return load(i)
        except ValueError as e:
            bad.add(i)
            first = first or f"{names[i]}: {e}"
            warn_skip(names[i], str(e))
    raise DataError(f"none of the {len(names)} images can be loaded any more ({first or names[index]}); were they "
                    "deleted or changed while running?")
