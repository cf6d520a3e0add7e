"""How much the demo's network gains over bicubic, photo by photo, on photos of your choice (4x, Y-PSNR):

    python scripts/bench_demo_gain.py [--photos DIR] [--weights FILE] [-opt RECIPE]

Each photo is cut to a multiple of the scale, shrunk by MATLAB-exact bicubic (as training makes its LR),
super-resolved, and compared with the bicubic enlargement of the same LR; PSNR on Y, border `--crop` cut.
Without --photos: photos that are neither training nor validation data of the demo and are not files of
this repository, read from packages the project installs, with no download: matplotlib's sample photo
grace_hopper.jpg and scikit-image's grey photos camera, coins, moon, brick, grass and gravel (grey photos are
scored as RGB with three equal channels; their Y is the grey value). The weights default to the newest
checkpoint of the recipe's run (its moving average when it kept one), i.e. what `make demo` trained.
"""
import argparse
import math
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402

SKIMAGE_GREY_PHOTOS = ("camera", "coins", "moon", "brick", "grass", "gravel")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)


def default_photos() -> Dict[str, np.ndarray]:
    """The documented set (see the module's docstring), as float RGB arrays in [0, 1] (small: read at once)."""
    import matplotlib.cbook
    import skimage.data
    from utils.image import read_image
    photos = {}
    for name in MATPLOTLIB_PHOTOS:
        photos[name] = read_image(matplotlib.cbook.get_sample_data(name, asfileobj=False))
    for name in SKIMAGE_GREY_PHOTOS:
        grey = getattr(skimage.data, name)().astype(np.float32) / 255
        photos[f"{name}.png"] = np.repeat(grey[:, :, None], 3, axis=2)
    return photos


def folder_photos(folder: Path) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, float RGB array in [0, 1]) of each readable image under `folder`, read one at a time; the folder
    is listed at once, so a wrong one is reported before the network is built."""
    from data.image_folder import list_images
    from inference.images import load_image
    files = list_images([folder], "--photos")

    def read() -> Iterator[Tuple[str, np.ndarray]]:
        for path in files:
            try:
                yield str(path.relative_to(folder)), load_image(path)
            except ValueError as e:
                print(f"skipping {path}: {e}")
    return read()


def table(rows: List[tuple]) -> str:
    """Rows of (photo, size, bicubic dB, SR dB) -> the printed table and its summary lines."""
    width = max(len("photo"), *(len(r[0]) for r in rows))
    lines = [f"{'photo':<{width}}  {'size':>9}  {'bicubic':>8}  {'demo SR':>8}  {'gain':>8}"]
    for name, size, bic, sr in rows:
        lines.append(f"{name:<{width}}  {size:>9}  {bic:>5.2f} dB  {sr:>5.2f} dB  {sr - bic:>+5.2f} dB")
    gains = [sr - bic for _, _, bic, sr in rows]
    worst = min(range(len(rows)), key=gains.__getitem__)
    lines.append(f"mean gain over bicubic {math.fsum(gains) / len(gains):+.2f} dB on {len(rows)} photos; "
                 f"{sum(g > 0 for g in gains)} of {len(rows)} above bicubic (lowest {gains[worst]:+.2f} dB: "
                 f"{rows[worst][0]})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="folder of HQ photos (searched recursively); "
                                                    "default: the set described above")
    parser.add_argument("--weights", help="generator weights (default: the newest checkpoint of the recipe's run)")
    parser.add_argument("-opt", "--opt", default="options/demo/rrdb_psnr.yml",
                        help="recipe whose network (and run) the weights belong to (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, as train.py's --set (e.g. the network's size)")
    parser.add_argument("--crop", type=int, help="border left out of the PSNR (default: the scale)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: as the recipe's gpu_ids say")
    args = parser.parse_args(argv)

    def bench() -> None:
        from inference.model import load_generator, parse_inference_options, pick_device
        from inference.versus_bicubic import versus_bicubic
        opt = parse_inference_options(args.opt, args.set)
        device = pick_device(opt, args.device)
        if args.crop is not None and args.crop < 0:
            raise ConfigError(f"--crop must be 0 or more, got {args.crop}")
        photos = folder_photos(args.photos) if args.photos else default_photos().items()
        net, weights = load_generator(opt, args.weights, device)
        print(f"weights: {weights}")
        scale = opt["scale"]
        crop = scale if args.crop is None else args.crop
        rows = []
        for name, hq in photos:
            if min(hq.shape[:2]) < scale * (2 * crop + 1):
                print(f"skipping {name}: {hq.shape[0]}x{hq.shape[1]} is too small for scale {scale} and crop {crop}")
                continue
            result = versus_bicubic(net, hq, scale, crop, device, name=name)
            rows.append((name, f"{result.size[1]}x{result.size[0]}", result.psnr_bicubic, result.psnr_sr))
        if not rows:
            raise ConfigError(f"no photo {'in ' + str(args.photos) + ' ' if args.photos else ''}could be read "
                              f"and was large enough to score")
        print(table(rows))

    return run_cli(bench)


if __name__ == "__main__":
    sys.exit(main())
