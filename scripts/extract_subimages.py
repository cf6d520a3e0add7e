"""Cut a folder of large images into overlapping square crops, as BasicSR prepares DIV2K, so that training
decodes a small file per crop instead of a whole 2K PNG.

    python scripts/extract_subimages.py INPUT OUTPUT [--crop-size 480] [--step 240] [--thresh-size 0]
        [--workers N] [--compression 3]

Crops start every `step` pixels; when the strip left at the bottom or right edge is wider than `thresh-size`,
one more crop flush with that edge covers it (so thresh-size 0 covers every pixel), else the strip is dropped.
The crops of `0001.png` are `0001_s001.png`, `0001_s002.png`, ... row by row, always PNG (lossless); a DIV2K LR
name such as `0001x4` loses its `x4`, so HR and LR crops pair by name. Images smaller than a crop, or
unreadable, are skipped and listed at the end.

Resumable: each crop is written to a temporary file and renamed, so an interrupted run leaves only whole crops,
and running the same command again skips the images whose crops all exist, without decoding them.
"""
import argparse
import os
import re
import sys
from contextlib import nullcontext
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import cv2
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.image_folder import image_size, list_images  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402


class Grid(NamedTuple):
    crop_size: int
    step: int
    thresh_size: int


def crop_starts(length: int, grid: Grid) -> List[int]:
    """Start offsets of the crops along one side of `length` pixels (none when it is shorter than a crop)."""
    if length < grid.crop_size:
        return []
    starts = list(range(0, length - grid.crop_size + 1, grid.step))
    if length - (starts[-1] + grid.crop_size) > grid.thresh_size:
        starts.append(length - grid.crop_size)
    return starts


def crop_positions(height: int, width: int, grid: Grid) -> List[Tuple[int, int]]:
    """(top, left) of every crop, row by row: the order of the _s001, _s002, ... names."""
    return [(top, left) for top in crop_starts(height, grid) for left in crop_starts(width, grid)]


def crop_stem(path: Path) -> str:
    """The file's stem without a DIV2K scale suffix (0001x4 -> 0001)."""
    return re.sub(r"(?<=\d)x\d+$", "", path.stem)


def extract_image(path: Path, output: Path, grid: Grid, compression: int) -> Tuple[int, str]:
    """Write the missing crops of one image: (crops written, why the image was skipped or "")."""
    try:
        positions = crop_positions(*image_size(path), grid)
        if not positions:
            return 0, f"smaller than {grid.crop_size}x{grid.crop_size}"
        names = [output / f"{crop_stem(path)}_s{i:03d}.png" for i in range(1, len(positions) + 1)]
        missing = [(pos, name) for pos, name in zip(positions, names) if not name.exists()]
        if not missing:
            return 0, ""
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # any depth and channels, written back unchanged
        if img is None:
            raise ValueError("cannot decode it")
    except ValueError as e:
        return 0, f"unreadable ({e})"
    size = grid.crop_size
    for (top, left), name in missing:
        ok, data = cv2.imencode(".png", img[top:top + size, left:left + size],
                                [cv2.IMWRITE_PNG_COMPRESSION, compression])
        if not ok:
            raise OSError(f"could not encode a crop of {path}")
        tmp = name.with_name(f".{name.name}.tmp")
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, name)  # atomic: a crop file is whole or absent
    return len(missing), ""


def extract_subimages(input_dir: Path, output_dir: Path, grid: Grid, workers: int = 1,
                      compression: int = 3) -> Tuple[int, List[str]]:
    """Crop every image under input_dir into output_dir: (crops written, a line for each image skipped)."""
    if grid.crop_size < 1 or grid.step < 1 or grid.thresh_size < 0:
        raise ConfigError(f"--crop-size and --step must be positive and --thresh-size not negative, got {grid}")
    if not 0 <= compression <= 9:
        raise ConfigError(f"--compression must be 0..9, got {compression}")
    input_dir, output_dir = input_dir.resolve(), output_dir.resolve()
    if output_dir == input_dir or input_dir in output_dir.parents:
        raise ConfigError(f"OUTPUT {output_dir} must not be inside INPUT {input_dir}: its crops would become inputs")
    files = list_images([input_dir], "INPUT")
    stems: Dict[str, Path] = {}
    for path in files:
        if crop_stem(path) in stems:
            raise ConfigError(f"{stems[crop_stem(path)]} and {path} would write crops of the same name")
        stems[crop_stem(path)] = path
    output_dir.mkdir(parents=True, exist_ok=True)
    work = partial(extract_image, output=output_dir, grid=grid, compression=compression)
    written, skipped = 0, []
    with Pool(workers) if workers > 1 else nullcontext() as pool:
        results = pool.imap(work, files) if pool else map(work, files)
        for (count, problem), path in zip(tqdm(results, total=len(files), unit="image", desc="cropping"), files):
            written += count
            if problem:
                skipped.append(f"skipped {path}: {problem}")
    return written, skipped


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="folder of large images (searched recursively)")
    parser.add_argument("output", type=Path, help="folder for the crops (created; may hold a partial run)")
    parser.add_argument("--crop-size", type=int, default=480)
    parser.add_argument("--step", type=int, default=240)
    parser.add_argument("--thresh-size", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compression", type=int, default=3, help="PNG compression level 0..9 (cv2's default 3)")
    args = parser.parse_args(argv)

    def body() -> None:
        grid = Grid(args.crop_size, args.step, args.thresh_size)
        written, skipped = extract_subimages(args.input, args.output, grid, args.workers, args.compression)
        print("\n".join(skipped + [f"{written} crops written to {args.output}"]))
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
