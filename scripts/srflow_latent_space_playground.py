"""SRFlow's latent space, hands on. Edit the settings below, or give any of them on the command line:

    python scripts/srflow_latent_space_playground.py -opt RECIPE --mode MODE --input GLOB --output DIR
        [--temperature T] [--samples N] [--reference GLOB] [--checkpoint PATH] [--device cpu|cuda] [--set K=V]

Modes (see "Using SRFlow" in the README); each result is a PNG in OUTPUT named <input>_<mode>_...png:
  temperature      SR at temperature t (0: the mean HQ image), SAMPLES samples per image
  restore          the SRFlow paper's restoration: encode, normalise the latents (per channel over space,
                   then per position across channels), scale by t, decode; the t=0 SR is written beside it
  latent_transfer  the latents of each REFERENCE image (their centre) decoded with the input's LR, and strips
                   of frames going from the input's own latents to the reference's (linear and slerp)
  feed_through     encode, then decode with fresh noise at temperature t
  diversity        SAMPLES samples at t; their per-pixel standard deviation as a heat map
  encode           the image's latents and LR saved as <input>_encode.pt, which every mode takes as an INPUT
                   (and latent_transfer as a REFERENCE) in place of an image
Diverged pixels (non-finite or beyond +-100) are reported and the result is made again at lower temperatures.
"""
import sys
from argparse import ArgumentParser, Namespace, RawDescriptionHelpFormatter
from glob import glob
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.imresize import imresize  # noqa: E402
from inference.corrupt import corrupt  # noqa: E402
from inference.images import load_image  # noqa: E402
from inference.latents import center_crop, lerp, normalize_for_restore, slerp  # noqa: E402
from inference.model import load_generator, parse_inference_options, pick_device  # noqa: E402
from inference.sr import conditioning, encode, lr_multiple, pad_to_multiple, super_resolve  # noqa: E402
from models import is_flow  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.image import img2tensor, write_image  # noqa: E402

# ---- settings: edit these, or give them on the command line ------------------------------------------------
MODE = "temperature"  # --mode: temperature | restore | latent_transfer | feed_through | diversity | encode
RECIPE = "options/demo/srflow.yml"  # -opt: the recipe the generator was trained with
INPUT = "datasets/skimage_photos/val/*.png"  # --input: glob of images (or of .pt files written by `encode`)
INPUT_IS = "hq"  # --input-is: "hq": the images are HQ, their LR is a bicubic downscale and results keep their
#                  size; "lr": the images are LR, results are `scale` times larger (the HQ image that is encoded
#                  is their bicubic upscaling)
OUTPUT = "results/latent_playground"  # --output: folder for the results
TEMPERATURE = 0.8  # --temperature: std of the latents drawn, or the factor on the latents given (restore, transfer)
SAMPLES = 3  # --samples: results per image in `temperature` mode, samples behind the `diversity` map
REFERENCE = ""  # --reference: glob of HQ images (or .pt files) whose latents `latent_transfer` moves onto the input
STEPS = 8  # --steps: frames in each interpolation strip of `latent_transfer`
JPEG_QUALITY = None  # --jpeg: e.g. 30. Corruptions apply to the input images, except in `latent_transfer`, where
BLUR_SIGMA = None  # --blur: e.g. 1.5      they apply to the references' LR (as the seed script did, so that
NOISE_STD = None  # --noise: e.g. 0.03     their latents carry the way from a corrupted LR to a clean HQ image)
CHECKPOINT = None  # --checkpoint: weights; None: the recipe's path.pretrain_model_generator, else the newest
#                    checkpoint of the recipe's experiment
DEVICE = None  # --device: cpu | cuda; None: CUDA when the recipe's gpu_ids ask for it and it is there
SEED = 0  # --seed: for the latents drawn, so that a run can be repeated


Refs = Dict[str, List[torch.Tensor]]  # latents of the reference images, by name


class Item(NamedTuple):
    """One input: its LR (padded to the net's multiple), the result size, and what its latents come from."""
    name: str
    lq: torch.Tensor
    size: Tuple[int, int]  # (H, W) of a result, before padding
    hq: Optional[torch.Tensor]  # the HQ image to encode (padded); None when the latents were loaded
    latents: Optional[List[torch.Tensor]]

    def encoded(self, net: nn.Module) -> List[torch.Tensor]:
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
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"cannot read latents file: {e}") from None
    if not isinstance(saved, dict) or not {"lq", "latents", "size"} <= set(saved):
        raise ValueError("not a latents file written by `--mode encode`")
    return saved


def load_item(path: Path, net: nn.Module, device: torch.device, args: Namespace) -> Item:
    if path.suffix == ".pt":
        saved = load_latents(path, device)
        return Item(saved.get("name", path.stem), saved["lq"], tuple(saved["size"]), None, saved["latents"])
    img = load_image(path)
    if args.mode != "latent_transfer":
        img = corrupt(img, args.jpeg, args.blur, args.noise, args.seed)
    hq, lq, size = hq_and_lq(img, net, device, args.input_is)
    return Item(path.stem, lq, size, hq, None)


def load_references(net: nn.Module, device: torch.device, args: Namespace) -> Refs:
    """{name: latents} of the reference files: HQ images (their LR corrupted as asked) or .pt files."""
    files = sorted(glob(args.reference)) if args.reference else []
    if not files:
        raise ConfigError(f"latent_transfer needs reference images: --reference `{args.reference}` matches none")
    refs = {}
    for name in files:
        path = Path(name)
        try:
            if path.suffix == ".pt":
                saved = load_latents(path, device)
                refs[saved.get("name", path.stem)] = saved["latents"]
                continue
            hq, lq, _ = hq_and_lq(load_image(path), net, device, "hq")
            lq = corrupt(lq[0].permute(1, 2, 0).cpu().numpy(), args.jpeg, args.blur, args.noise, args.seed)
            refs[path.stem] = encode(net, hq, img2tensor(lq)[None].to(device))
        except ValueError as e:
            print(f"skipping reference {path}: {e}")
    return refs


def crop(item: Item, img: torch.Tensor) -> torch.Tensor:
    return img[..., :item.size[0], :item.size[1]]


def save(out: Path, item: Item, what: str, img: torch.Tensor) -> None:
    write_image(out / f"{item.name}_{what}.png", crop(item, img)[0])


# ---- modes: (net, item, args, output folder, references) -> files in the folder ----------------------------
def mode_temperature(net: nn.Module, item: Item, args: Namespace, out: Path, refs: Refs) -> None:
    lr_enc = conditioning(net, item.lq)  # one RRDB pass for all samples (likewise in the modes below)
    for k in range(1 if args.temperature == 0 else args.samples):
        result = super_resolve(net, item.lq, args.temperature, name=item.name, lr_enc=lr_enc)
        save(out, item, f"temperature_t{args.temperature:g}_{k}", result.image)


def mode_restore(net: nn.Module, item: Item, args: Namespace, out: Path, refs: Refs) -> None:
    latents, lr_enc = normalize_for_restore(item.encoded(net)), conditioning(net, item.lq)
    result = super_resolve(net, item.lq, args.temperature, latents=latents, name=item.name, lr_enc=lr_enc)
    save(out, item, f"restore_t{args.temperature:g}", result.image)
    plain = super_resolve(net, item.lq, 0.0, name=item.name, lr_enc=lr_enc)  # the seed found this more reliable
    save(out, item, "restore_sr_t0", plain.image)
    if item.hq is not None and (args.jpeg is not None or args.blur or args.noise):
        save(out, item, "restore_input", item.hq)  # what was restored: the corrupted input, at the results' size


def mode_latent_transfer(net: nn.Module, item: Item, args: Namespace, out: Path, refs: Refs) -> None:
    own, lr_enc = item.encoded(net), conditioning(net, item.lq)
    for ref_name, ref in refs.items():
        try:
            moved = [center_crop(r, z.shape) for r, z in zip(ref, own)]
        except ValueError as e:
            print(f"{item.name}: skipping reference {ref_name}: {e}")
            continue
        result = super_resolve(net, item.lq, args.temperature, latents=moved, name=item.name, lr_enc=lr_enc)
        save(out, item, f"latent_transfer_{ref_name}", result.image)
        for kind, mix in (("lerp", lerp), ("slerp", slerp)):
            frames = [crop(item, super_resolve(net, item.lq, args.temperature, latents=mix(own, moved, p),
                                               name=f"{item.name} {kind} frame {i}", lr_enc=lr_enc).image)
                      for i, p in enumerate(np.linspace(0, 1, args.steps))]
            write_image(out / f"{item.name}_latent_transfer_{ref_name}_{kind}.png", torch.cat(frames, dim=-1)[0])


def mode_feed_through(net: nn.Module, item: Item, args: Namespace, out: Path, refs: Refs) -> None:
    fresh = [torch.randn_like(z) for z in item.encoded(net)]
    result = super_resolve(net, item.lq, args.temperature, latents=fresh, name=item.name)
    save(out, item, f"feed_through_t{args.temperature:g}", result.image)


def mode_diversity(net: nn.Module, item: Item, args: Namespace, out: Path, refs: Refs) -> None:
    lr_enc = conditioning(net, item.lq)
    samples = [super_resolve(net, item.lq, args.temperature, name=item.name, lr_enc=lr_enc).image
               for _ in range(max(args.samples, 2))]
    std = torch.stack([crop(item, s)[0] for s in samples]).std(0).mean(0)  # HxW, averaged over colours
    print(f"{item.name}: per-pixel std over {len(samples)} samples at t={args.temperature:g}: "
          f"mean {float(std.mean()):.4f}, max {float(std.max()):.4f} (the heat map's top colour)")
    heat = (std / std.max().clamp_min(1e-8) * 255).round().byte().cpu().numpy()
    write_image(out / f"{item.name}_diversity_t{args.temperature:g}.png",
                cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO)[:, :, ::-1])


def mode_encode(net: nn.Module, item: Item, args: Namespace, out: Path, refs: Refs) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"name": item.name, "lq": item.lq.cpu(), "latents": [z.cpu() for z in item.encoded(net)],
                "size": list(item.size)}, out / f"{item.name}_encode.pt")


MODES = {"temperature": mode_temperature, "restore": mode_restore, "latent_transfer": mode_latent_transfer,
         "feed_through": mode_feed_through, "diversity": mode_diversity, "encode": mode_encode}


def play(args: Namespace) -> None:
    opt = parse_inference_options(args.opt, args.set)
    device = pick_device(opt, args.device)
    net, weights = load_generator(opt, args.checkpoint, device)
    if not is_flow(net):
        raise ConfigError(f"the playground needs an SRFlow generator (which_model_G: srflow); {args.opt} has "
                          f"{type(net).__name__}")
    print(f"{args.mode}: generator {weights} on {device}")
    files = sorted(glob(args.input))
    if not files:
        raise ConfigError(f"--input `{args.input}` matches no file")
    torch.manual_seed(args.seed)
    refs = load_references(net, device, args) if args.mode == "latent_transfer" else {}
    out = Path(args.output)
    with torch.no_grad():
        for name in files:
            try:
                item = load_item(Path(name), net, device, args)
            except ValueError as e:
                print(f"skipping {name}: {e}")
                continue
            MODES[args.mode](net, item, args, out, refs)
    print(f"results in {out}")


def parse_args(argv: Optional[List[str]] = None) -> Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("-opt", "--opt", default=RECIPE, help="recipe path, or a file name under options/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--mode", default=MODE, choices=sorted(MODES))
    parser.add_argument("--input", default=INPUT, help="glob of images or .pt latents files")
    parser.add_argument("--input-is", default=INPUT_IS, choices=["lr", "hq"])
    parser.add_argument("--output", default=OUTPUT)
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--reference", default=REFERENCE, help="glob of HQ images or .pt files (latent_transfer)")
    parser.add_argument("--steps", type=int, default=STEPS, help="frames per interpolation strip")
    parser.add_argument("--jpeg", type=int, default=JPEG_QUALITY, help="JPEG quality 1..100")
    parser.add_argument("--blur", type=float, default=BLUR_SIGMA, help="gaussian blur sigma (pixels)")
    parser.add_argument("--noise", type=float, default=NOISE_STD, help="gaussian noise std ([0, 1] scale)")
    parser.add_argument("--checkpoint", default=CHECKPOINT)
    parser.add_argument("--device", default=DEVICE, choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.samples < 1 or args.steps < 2 or args.temperature < 0:
        parser.error("--samples must be >= 1, --steps >= 2 and --temperature >= 0")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: play(args))


if __name__ == "__main__":
    sys.exit(main())
