"""SRFlow's latent space, hands on: the modes of DLAS's srflow_latent_space_playground.py, and a few more.
Edit the settings below, or give any of them on the command line:

    python scripts/srflow_latent_space_playground.py -opt RECIPE --mode MODE --input GLOB --output DIR
        [--temperature T] [--steps N] [--samples N] [--resample-factor F] [--restore-norm HOW]
        [--reference GLOB] [--reference-corruptions NAMES] [--jpeg Q] [--blur S] [--noise S]
        [--checkpoint PATH] [--device cpu|cuda] [--precision float32|bf16] [--set K=V] [--overwrite]

An input image is an HQ image (--input-is lr: an LR one, whose bicubic upscaling is the HQ image); its latents
are encoded from it and its LR, the MATLAB bicubic downscale the training data is made with. Modes (DLAS's four
first; see docs/evaluation.md, "test.py"); each result is a PNG in OUTPUT named <input>_<mode>_...png:
  temperature      the input's own latents times t, decoded: t=1 gives the input back, t=0 the mean image
  restore          the latents normalised (--restore-norm spatial-local, DLAS's: per channel over positions, then
                   per position over channels, unbiased std; `spatial`: the first step; `global`: the paper's,
                   over everything), times t; the t=0 SR is written beside it
  latent_transfer  the centre of each REFERENCE's latents times t, decoded with the input's LR. The references'
                   LR are corrupted first (--reference-corruptions, DLAS's jpeg-medium,gaussian_blur_3; `none`:
                   clean), so that their latents carry the way from a corrupted LR to a clean HQ image. Also lerp
                   and slerp strips from the input's own latents to the reference's
  feed_through     fresh standard-normal latents times t
  sample           SAMPLES samples drawn at temperature t
  diversity        SAMPLES samples at t; their per-pixel standard deviation as a heat map
  encode           the image's latents and LR saved as <input>_encode.pt, which every mode takes as an INPUT
                   (and latent_transfer as a REFERENCE) in place of an image
Every mode also writes DLAS's interpolation strip, STEPS frames <input>_<mode>_strip<k>.png (latent_transfer:
<input>_latent_transfer_<reference>_strip<k>.png) from the mode's latents times t (k=0) evenly down to zeros,
the mean image (k=STEPS-1). --resample-factor scales each input image before it is encoded; --jpeg, --blur and
--noise corrupt it. Diverged pixels (non-finite or beyond +-100) are reported and the result is made again at
lower temperatures. Every file is written whole (a temporary file, then a rename). OUTPUT is locked while the
playground runs; a file there that the playground did not write is never written over, nor one of its own
earlier results unless --overwrite is given (OUTPUT/.written.json records what it wrote).
"""
import math
import sys
from argparse import ArgumentParser, Namespace, RawDescriptionHelpFormatter
from glob import glob
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.cpu_memory import use_huge_pages  # noqa: E402

use_huge_pages()  # before torch is imported: utils/cpu_memory.py
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from data.degradations import CORRUPTIONS, corrupt as corrupt_named  # noqa: E402
from data.imresize import imresize  # noqa: E402
from inference.corrupt import check_corruption, corrupt  # noqa: E402
from inference.images import load_image, resample  # noqa: E402
from inference.latents import (RESTORE_NORMS, center_crop, lerp, normalize_for_restore, slerp,  # noqa: E402
                               strip_fractions)
from inference.model import load_generator, parse_inference_options, pick_device  # noqa: E402
from inference.sr import conditioning, encode, lr_multiple, pad_to_multiple, super_resolve  # noqa: E402
from models import is_flow  # noqa: E402
from trainer.checkpoint import atomic_save  # noqa: E402
from utils import precision  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.image import img2tensor, write_image  # noqa: E402
from utils.options import MAX_SAMPLES, check_temperatures  # noqa: E402
from utils.output_folder import OutputFolder  # noqa: E402
from utils.path_names import name_problem  # noqa: E402

# ---- settings: edit these, or give them on the command line ------------------------------------------------
MODE = "temperature"  # --mode: temperature | restore | latent_transfer | feed_through | sample | diversity | encode
RECIPE = "options/demo/srflow.yml"  # -opt: the recipe the generator was trained with
INPUT = "datasets/skimage_photos/val/*.png"  # --input: glob of images (or of .pt files written by `encode`)
INPUT_IS = "hq"  # --input-is: "hq": the images are HQ, their LR is a bicubic downscale and results keep their
#                  size; "lr": the images are LR, results are `scale` times larger (the HQ image that is encoded
#                  is their bicubic upscaling)
OUTPUT = "results/latent_playground"  # --output: folder for the results
TEMPERATURE = 0.8  # --temperature: the factor on the mode's latents (the std of those drawn)
STEPS = 10  # --steps: frames in each interpolation strip (DLAS's default)
SAMPLES = 3  # --samples: results per image in `sample` mode, samples behind the `diversity` map
RESAMPLE_FACTOR = 1.0  # --resample-factor: scale each input image by this before encoding it (DLAS's
#                        resample_factor; e.g. 2 with --input-is hq gives a 2x upscaling of the image itself)
RESTORE_NORM = "spatial-local"  # --restore-norm: spatial-local (DLAS's) | spatial | global (the paper's)
REFERENCE = ""  # --reference: glob of HQ images (or .pt files) whose latents `latent_transfer` moves onto the input
REFERENCE_CORRUPTIONS = "jpeg-medium,gaussian_blur_3"  # --reference-corruptions: data/degradations.py names applied,
#                        in order, to each reference's LR before encoding (DLAS's); "none": no corruption
JPEG_QUALITY = None  # --jpeg: e.g. 30  \
BLUR_SIGMA = None  # --blur: e.g. 1.5     corruptions of the input images (in every mode), to try restoration
NOISE_STD = None  # --noise: e.g. 0.03  /
CHECKPOINT = None  # --checkpoint: weights; None: the recipe's path.pretrain_model_generator, else the newest
#                    checkpoint of the recipe's experiment
DEVICE = None  # --device: cpu | cuda; None: CUDA when the recipe's gpu_ids ask for it and it is there
SEED = 0  # --seed: for the latents drawn and the corruptions, so that a run can be repeated
PRECISION = None  # --precision: float32 | bf16 (faster on CPUs with AVX512_BF16 or AMX); None: the recipe's

MAX_STEPS = 100  # frames per strip: each is a decode, and a file
MAX_RESAMPLE = 16  # a larger factor makes an image too large to encode

Latents = List[torch.Tensor]
Refs = Dict[str, Latents]  # latents of the reference images, by name


class Item(NamedTuple):
    """One input: its LR (padded to the net's multiple), the result size, and what its latents come from."""
    name: str
    lq: torch.Tensor
    size: Tuple[int, int]  # (H, W) of a result, before padding
    hq: Optional[torch.Tensor]  # the HQ image to encode (padded); None when the latents were loaded
    latents: Optional[Latents]

    def encoded(self, net: nn.Module) -> Latents:
        return self.latents if self.latents is not None else encode(net, self.hq, self.lq)


def hq_and_lq(img: np.ndarray, net: nn.Module, device: torch.device,
              input_is: str) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
    """(HQ, LQ, result size) for an image: an LR one and its upscaling, or an HQ one and its downscaling."""
    scale, multiple = net.hr_factor, lr_multiple(net)
    x = img2tensor(img)[None].to(device)
    if input_is == "lr":
        lq = pad_to_multiple(x, multiple)
        return imresize(lq, scale=scale).clamp(0, 1), lq, (x.shape[2] * scale, x.shape[3] * scale)
    hq = pad_to_multiple(x, multiple * scale)
    return hq, imresize(hq, scale=1 / scale).clamp(0, 1), (x.shape[2], x.shape[3])


def load_latents(path: Path, device: torch.device) -> dict:
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a text file, a truncated or foreign one: torch's reason alone can be a bare number
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ValueError(f"not a latents file written by `--mode encode` (it cannot be read as one: "
                         f"{type(e).__name__}: {reason})") from None
    if not isinstance(saved, dict) or not {"lq", "latents", "size"} <= set(saved):
        raise ValueError("not a latents file written by `--mode encode`")
    name = saved.get("name", path.stem)
    problem = name_problem(name) if isinstance(name, str) else "is not text"
    if problem:  # it names the result files
        raise ValueError(f"its image name `{str(name)[:40]}` {problem}")
    saved["name"] = name
    return saved


def load_item(path: Path, net: nn.Module, device: torch.device, args: Namespace) -> Item:
    if path.suffix == ".pt":
        saved = load_latents(path, device)
        return Item(saved["name"], saved["lq"], tuple(saved["size"]), None, saved["latents"])
    img = corrupt(resample(load_image(path), args.resample_factor), args.jpeg, args.blur, args.noise, args.seed)
    hq, lq, size = hq_and_lq(img, net, device, args.input_is)
    return Item(path.stem, lq, size, hq, None)


def load_references(net: nn.Module, device: torch.device, args: Namespace) -> Refs:
    """{name: latents} of the reference files: HQ images, their LR corrupted by --reference-corruptions as
    DLAS's script corrupts them, or .pt files (used as saved)."""
    files = sorted(glob(args.reference)) if args.reference else []
    if not files:
        raise ConfigError(f"latent_transfer needs reference images: --reference `{args.reference}` matches none")
    refs = {}
    for name in files:
        path = Path(name)
        try:
            if path.suffix == ".pt":
                saved = load_latents(path, device)
                refs[unique(saved["name"], path, refs)] = saved["latents"]
                continue
            hq, lq, _ = hq_and_lq(load_image(path), net, device, "hq")
            lq = corrupt_named(lq[0].permute(1, 2, 0).cpu().numpy(), args.reference_corruptions, args.seed)
            refs[unique(path.stem, path, refs)] = encode(net, hq, img2tensor(lq)[None].to(device))
        except ValueError as e:
            print(f"skipping reference {path}: {e}")
    return refs


def unique(name: str, path: Path, taken: Dict[str, object]) -> str:
    """`name`, refused when a reference loaded before has it (their results would share file names)."""
    if name.casefold() in (t.casefold() for t in taken):
        raise ConfigError(f"reference {path} is named `{name}` like another reference (file names differ only in "
                          "extension or case, or a latents file's name): rename one")
    return name


def input_names(files: List[str]) -> None:
    """Refuse inputs that would give results of the same names (a.png and a.jpg, a.png and a latents file of
    image `a`): one would silently replace the other's."""
    seen: Dict[str, str] = {}
    for name in files:
        path = Path(name)
        try:
            stem = load_latents(path, torch.device("cpu"))["name"] if path.suffix == ".pt" else path.stem
        except ValueError:
            continue  # skipped, with its reason, when its turn comes
        other = seen.setdefault(stem.casefold(), name)
        if other != name:
            raise ConfigError(f"--input {other} and {name} both name their results `{stem}_...`: one would "
                              "replace the other's; rename one, or run them separately with different --output")


def crop(item: Item, img: torch.Tensor) -> torch.Tensor:
    return img[..., :item.size[0], :item.size[1]]


def save(out: OutputFolder, item: Item, what: str, img: torch.Tensor) -> None:
    write_image(out.path(f"{item.name}_{what}.png"), crop(item, img)[0])


def decode(net: nn.Module, item: Item, t: float, latents: Latents, lr_enc: tuple, what: str) -> torch.Tensor:
    """`latents` times t, decoded with the item's LR (falling back to lower t on diverged pixels)."""
    return super_resolve(net, item.lq, t, latents=latents, name=f"{item.name} {what}", lr_enc=lr_enc).image


def write_strip(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, what: str, latents: Latents,
                lr_enc: tuple, first: Optional[torch.Tensor] = None) -> None:
    """DLAS's interpolation strip: --steps frames from `latents` times t to zeros, the mean image (the last
    frame is decoded exactly as a t=0 result is). `first`: frame 0 when the mode has already made it."""
    for k, keep in enumerate(strip_fractions(args.steps)):
        frame = first if k == 0 and first is not None else \
            decode(net, item, args.temperature * keep, latents, lr_enc, f"{what} strip frame {k}")
        save(out, item, f"{what}_strip{k}", frame)


def draw(item: Item, net: nn.Module, count: int) -> List[Latents]:
    """`count` sets of standard-normal latents of the item's shapes; decoded at t they are samples at t."""
    shapes = [z.shape for z in item.encoded(net)]
    return [[torch.randn(s, device=item.lq.device) for s in shapes] for _ in range(count)]


# ---- modes: (net, item, args, output folder, references) -> files in the folder ----------------------------
def mode_temperature(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    own, lr_enc = item.encoded(net), conditioning(net, item.lq)  # one RRDB pass for every decode of the item
    result = decode(net, item, args.temperature, own, lr_enc, "temperature")
    save(out, item, f"temperature_t{args.temperature:g}", result)
    write_strip(net, item, args, out, "temperature", own, lr_enc, result)


def mode_sample(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    lr_enc = conditioning(net, item.lq)
    drawn = draw(item, net, 1 if args.temperature == 0 else args.samples)
    images = [decode(net, item, args.temperature, z, lr_enc, f"sample {k}") for k, z in enumerate(drawn)]
    for k, image in enumerate(images):
        save(out, item, f"sample_t{args.temperature:g}_{k}", image)
    write_strip(net, item, args, out, "sample", drawn[0], lr_enc, images[0])


def mode_restore(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    latents, lr_enc = normalize_for_restore(item.encoded(net), args.restore_norm), conditioning(net, item.lq)
    result = decode(net, item, args.temperature, latents, lr_enc, "restore")
    save(out, item, f"restore_t{args.temperature:g}", result)
    plain = super_resolve(net, item.lq, 0.0, name=item.name, lr_enc=lr_enc)  # the seed found this more reliable
    save(out, item, "restore_sr_t0", plain.image)
    if item.hq is not None and (args.jpeg is not None or args.blur or args.noise):
        save(out, item, "restore_input", item.hq)  # what was restored: the corrupted input, at the results' size
    write_strip(net, item, args, out, "restore", latents, lr_enc, result)


def mode_latent_transfer(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    own, lr_enc = item.encoded(net), conditioning(net, item.lq)
    for ref_name, ref in refs.items():
        try:
            moved = [center_crop(r, z.shape) for r, z in zip(ref, own)]
        except ValueError as e:
            print(f"{item.name}: skipping reference {ref_name}: {e}")
            continue
        what = f"latent_transfer_{ref_name}"
        result = decode(net, item, args.temperature, moved, lr_enc, what)
        save(out, item, what, result)
        for kind, mix in (("lerp", lerp), ("slerp", slerp)):
            frames = [crop(item, decode(net, item, args.temperature, mix(own, moved, p), lr_enc, f"{kind} frame {i}"))
                      for i, p in enumerate(np.linspace(0, 1, args.steps))]
            write_image(out.path(f"{item.name}_{what}_{kind}.png"), torch.cat(frames, dim=-1)[0])
        write_strip(net, item, args, out, what, moved, lr_enc, result)


def mode_feed_through(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    fresh, lr_enc = draw(item, net, 1)[0], conditioning(net, item.lq)
    result = decode(net, item, args.temperature, fresh, lr_enc, "feed_through")
    save(out, item, f"feed_through_t{args.temperature:g}", result)
    write_strip(net, item, args, out, "feed_through", fresh, lr_enc, result)


def mode_diversity(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    lr_enc = conditioning(net, item.lq)
    drawn = draw(item, net, max(args.samples, 2))
    samples = [decode(net, item, args.temperature, z, lr_enc, f"sample {k}") for k, z in enumerate(drawn)]
    std = torch.stack([crop(item, s)[0] for s in samples]).std(0).mean(0)  # HxW, averaged over colours
    print(f"{item.name}: per-pixel std over {len(samples)} samples at t={args.temperature:g}: "
          f"mean {float(std.mean()):.4f}, max {float(std.max()):.4f} (the heat map's top colour)")
    heat = (std / std.max().clamp_min(1e-8) * 255).round().byte().cpu().numpy()
    write_image(out.path(f"{item.name}_diversity_t{args.temperature:g}.png"),
                cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO)[:, :, ::-1])
    write_strip(net, item, args, out, "diversity", drawn[0], lr_enc, samples[0])


def mode_encode(net: nn.Module, item: Item, args: Namespace, out: OutputFolder, refs: Refs) -> None:
    own = item.encoded(net)
    atomic_save({"name": item.name, "lq": item.lq.cpu(), "latents": [z.cpu() for z in own],
                 "size": list(item.size)}, out.path(f"{item.name}_encode.pt"))
    write_strip(net, item, args, out, "encode", own, conditioning(net, item.lq))


MODES = {"temperature": mode_temperature, "restore": mode_restore, "latent_transfer": mode_latent_transfer,
         "feed_through": mode_feed_through, "sample": mode_sample, "diversity": mode_diversity,
         "encode": mode_encode}


def check_args(args: Namespace) -> None:
    """Every value checked before the model loads; a mistake is one ConfigError line."""
    args.temperature = check_temperatures(args.temperature, "--temperature")[0]
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise ConfigError(f"--samples must be 1 to {MAX_SAMPLES}, got {args.samples}")
    if not 2 <= args.steps <= MAX_STEPS:
        raise ConfigError(f"--steps must be 2 to {MAX_STEPS} (frames per interpolation strip), got {args.steps}")
    if not (math.isfinite(args.resample_factor) and 0 < args.resample_factor <= MAX_RESAMPLE):
        raise ConfigError(f"--resample-factor must be a number > 0 and <= {MAX_RESAMPLE}, got {args.resample_factor}")
    check_corruption(args.jpeg, args.blur, args.noise)
    names = [n.strip() for n in str(args.reference_corruptions).split(",") if n.strip()]
    args.reference_corruptions = [] if names == ["none"] else names
    for name in args.reference_corruptions:
        CORRUPTIONS.get(name, "--reference-corruptions")


def play(args: Namespace) -> None:
    check_args(args)
    opt = parse_inference_options(args.opt, args.set + ([f"precision={args.precision}"] if args.precision else []))
    files = sorted(glob(args.input))
    if not files:
        raise ConfigError(f"--input `{args.input}` matches no file")
    input_names(files)
    with OutputFolder(Path(args.output), "the playground", "choose another --output folder",
                      overwrite=args.overwrite) as out:
        play_into(out, files, opt, args)


def play_into(out: OutputFolder, files: List[str], opt: dict, args: Namespace) -> None:
    """The playground's work, its output folder locked."""
    device = pick_device(opt, args.device)
    net, weights = load_generator(opt, args.checkpoint, device)
    if not is_flow(net):
        raise ConfigError(f"the playground needs an SRFlow generator (which_model_G: srflow); {args.opt} has "
                          f"{type(net).__name__}")
    dtype, note = precision.autocast_dtype(opt["precision"], device, f"precision: {opt['precision']}")
    print(f"{args.mode}: generator {weights} on {device}" + (" in bf16" if dtype else ""))
    if note:
        print(note)
    if args.resample_factor != 1 and any(f.endswith(".pt") for f in files):
        print("note: --resample-factor applies to images; latents files are used as saved")
    torch.manual_seed(args.seed)
    with precision.autocast(device, dtype):
        refs = load_references(net, device, args) if args.mode == "latent_transfer" else {}
    with torch.no_grad(), precision.autocast(device, dtype):
        for name in files:
            try:
                item = load_item(Path(name), net, device, args)
            except ValueError as e:
                print(f"skipping {name}: {e}")
                continue
            try:
                MODES[args.mode](net, item, args, out, refs)
            except OSError as e:  # a full or read-only disk: each file is whole, earlier results are kept
                raise ConfigError(f"cannot write the results of {name} in {out.root}: {e}") from None
    print(f"results in {out.root}")


def parse_args(argv: Optional[List[str]] = None) -> Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", default=RECIPE, help="recipe path, or a file name under options/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--mode", default=MODE, choices=sorted(MODES))
    parser.add_argument("--input", default=INPUT, help="glob of images or .pt latents files")
    parser.add_argument("--input-is", default=INPUT_IS, choices=["lr", "hq"])
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--temperature", default=TEMPERATURE, help="a finite number >= 0")
    parser.add_argument("--steps", type=int, default=STEPS, help="frames per interpolation strip (>= 2)")
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--resample-factor", type=float, default=RESAMPLE_FACTOR,
                        help="scale each input image by this before encoding it")
    parser.add_argument("--restore-norm", default=RESTORE_NORM, choices=RESTORE_NORMS)
    parser.add_argument("--reference", default=REFERENCE, help="glob of HQ images or .pt files (latent_transfer)")
    parser.add_argument("--reference-corruptions", default=REFERENCE_CORRUPTIONS,
                        help="comma-separated corruption names for the references' LR, or `none`")
    parser.add_argument("--jpeg", type=int, default=JPEG_QUALITY, help="JPEG quality 1..100")
    parser.add_argument("--blur", type=float, default=BLUR_SIGMA, help="gaussian blur sigma (pixels)")
    parser.add_argument("--noise", type=float, default=NOISE_STD, help="gaussian noise std ([0, 1] scale)")
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    parser.add_argument("--device", default=DEVICE, choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--precision", default=PRECISION, choices=precision.CHOICES)
    parser.add_argument("--overwrite", action="store_true",
                        help="write over the playground's own earlier results in OUTPUT (never over other files)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: play(args))


if __name__ == "__main__":
    sys.exit(main())
