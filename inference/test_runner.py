"""test.py's work: super-resolve the images of every `datasets.test*` section, write them as PNGs to
`results/<name>/<dataset name>/`, and score them against HQ images where the set has them."""
import csv
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from tqdm import tqdm

from data import build_dataset
from inference.images import conversion_note
from inference.lpips_metric import load_lpips
from inference.model import load_generator, pick_device
from inference.sr import conditioning, super_resolve
from models import is_flow
from utils.errors import ConfigError
from utils.image import write_image
from utils.metrics import psnr_y, ssim_y

Row = Dict[str, Any]
METRICS = ("psnr_y", "ssim_y", "lpips")
TEST_MODES = ("lq_folder", "fullimage", "paired")  # whole images, each file once


def find_test_sets(opt: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The `datasets.<name>` sections whose name starts with `test` (or that say `phase: test`)."""
    sets = {name: ds for name, ds in opt["datasets"].items() if ds["phase"] == "test"}
    if not sets:
        raise ConfigError("the recipe has no `datasets.test` section: add one with `mode: lq_folder` (a folder "
                          "of LQ images), `mode: fullimage` (HQ images, downscaled) or `mode: paired`")
    for key, ds in sets.items():
        if ds["mode"] not in TEST_MODES:
            raise ConfigError(f"`datasets.{key}.mode` is `{ds['mode']}`; a test set needs one of "
                              f"{', '.join(TEST_MODES)}")
    names = [ds["name"] for ds in sets.values()]
    if len(set(names)) < len(names):
        raise ConfigError(f"the test sets need different `name`s (their result folders), got {', '.join(names)}")
    return sets


class Tester:
    """One generator, the recipe's `test:` settings, and the images of one set after another."""

    def __init__(self, opt: Dict[str, Any], tile: Optional[int] = None, report: Callable[[str], None] = tqdm.write):
        self.opt, self.report = opt, report
        self.device = pick_device(opt)
        self.net, weights = load_generator(opt, device=self.device)
        report(f"generator `{opt['name']}`: {weights} on {self.device}")
        settings = opt["test"]
        self.heats = [float(t) for t in settings["heats"]] if is_flow(self.net) else [None]
        self.tile = settings["tile"] if tile is None else tile
        self.overlap = settings["tile_overlap"]
        self.crop = opt["scale"] if settings["crop_border"] is None else settings["crop_border"]
        self.lpips, self.lpips_note = None, None  # loaded when the first HQ image needs it

    def relay(self, caught: List[warnings.WarningMessage]) -> None:
        for w in caught:
            self.report(str(w.message))

    def run(self) -> Dict[str, List[Row]]:
        """Every test set; returns each set's mean rows (one per temperature, when it has HQ images)."""
        torch.manual_seed(self.opt["manual_seed"])
        return {key: self.run_set(key, opt_ds) for key, opt_ds in find_test_sets(self.opt).items()}

    def run_set(self, key: str, opt_ds: Dict[str, Any]) -> List[Row]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = build_dataset(opt_ds, self.opt, key)
        self.relay(caught)
        out_dir = Path(self.opt["path"]["results_root"]) / opt_ds["name"]
        rows: List[Row] = []
        for i in tqdm(range(len(dataset)), desc=f"test {opt_ds['name']}", unit="image", dynamic_ncols=True):
            rows += self.run_image(dataset, i, out_dir)
        scored = [r for r in rows if "psnr_y" in r]
        if not scored:
            self.report(f"{len(rows)} result(s) in {out_dir} (no HQ images, so no metrics)")
            return []
        means = [mean_row([r for r in scored if r["temperature"] == t], t) for t in self.heats]
        write_csv(out_dir / "metrics.csv", scored + means)
        for row in means:
            self.report(f"{opt_ds['name']} mean ({row['images']} images){describe(row)}")
        self.report(f"results and metrics.csv in {out_dir}")
        return means

    def run_image(self, dataset: Any, index: int, out_dir: Path) -> List[Row]:
        hq_path, lq_path = dataset.pairs[index]
        source = hq_path or lq_path
        for path in (hq_path, lq_path):
            note = path and conversion_note(path)
            if note:
                self.report(note)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                item = dataset[index]
            except RuntimeError:  # no image of the set decodes at all
                item = {}
        self.relay(caught)
        if (item.get("hq_path") or item.get("lq_path")) != str(source):  # the set substituted another image
            self.report(f"skipping {source}: it cannot be decoded")
            return []
        lq, hq = item["lq"][None].to(self.device), item.get("hq")
        rows = []
        lr_enc = None if self.tile else conditioning(self.net, lq)  # one RRDB pass for every temperature
        for t in self.heats:
            result = super_resolve(self.net, lq, t or 0.0, tile=self.tile, overlap=self.overlap,
                                   name=source.name, report=self.report, lr_enc=lr_enc)
            suffix = "" if t is None else f"_t{t:g}"
            write_image(out_dir / f"{source.stem}{suffix}.png", result.image[0])
            row: Row = {"image": source.name, "temperature": t, "temperature_used": result.temperature,
                        "diverged": result.diverged}
            if hq is not None:
                row.update(self.score(result.image[0].cpu(), hq))
                self.report(f"{source.name}{describe(row)}")
            rows.append(row)
        return rows

    def score(self, sr: torch.Tensor, hq: torch.Tensor) -> Row:
        scores = {"psnr_y": psnr_y(sr, hq, self.crop), "ssim_y": ssim_y(sr, hq, self.crop)}
        if self.lpips_note is None:
            self.lpips, self.lpips_note = load_lpips(self.device)
            if self.lpips_note:
                self.report(self.lpips_note)
        if self.lpips is not None:
            scores["lpips"] = self.lpips(sr[None], hq[None])
        return scores


def describe(row: Row) -> str:
    at = "" if row["temperature"] is None else f" t={row['temperature']:g}"
    parts = [f"PSNR-Y {row['psnr_y']:.2f} dB", f"SSIM-Y {row['ssim_y']:.4f}"]
    if "lpips" in row:
        parts.append(f"LPIPS {row['lpips']:.4f}")
    return f"{at}: " + ", ".join(parts)


def mean_row(rows: List[Row], temperature: Optional[float]) -> Row:
    mean: Row = {"image": "mean", "temperature": temperature, "images": len(rows)}
    for key in METRICS:
        values = [r[key] for r in rows if key in r]
        if values:
            mean[key] = math.fsum(values) / len(values)
    return mean


def write_csv(path: Path, rows: List[Row]) -> None:
    columns = ["image", "temperature", "temperature_used", "diverged"] + [m for m in METRICS if m in rows[0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def run_test(opt: Dict[str, Any], tile: Optional[int] = None,
             report: Callable[[str], None] = tqdm.write) -> Dict[str, List[Row]]:
    """Run test.py on a parsed recipe; returns each test set's mean rows."""
    return Tester(opt, tile, report).run()
