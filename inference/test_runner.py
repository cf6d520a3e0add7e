"""test.py's work: super-resolve the images of every `datasets.test*` section, write them as PNGs to
`results/<name>/<dataset name>/`, score them against HQ images where the set has them, and draw pictures.

SRFlow gives `test.samples` results for every temperature above 0 (one at 0, which is deterministic), named
`<input stem>_t<temperature>_s<k>.png`; a plain SR network gives one, `<input stem>.png`. The tables are
inference/sr_metrics_table.py's. Every image draws its latents from its own seed (the recipe's and the image's
name), so an interrupted run, started again, skips the images it finished and ends with the same results.
"""
import importlib.util
import math
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from data import build_dataset
from data.image_folder import image_size
from inference.images import conversion_note
from inference.lpips_metric import load_lpips
from inference.model import load_generator, pick_device
from inference.pictures import Panel, heat_map, save_figure, sweep_figure, write_strip
from inference.scoring import sample_statistics, score, std_map
from inference.sr import conditioning, super_resolve
from inference.sr_metrics_table import TABLE_FILES, ResultsTable, Row, as_row, cell, format_summary
from inference.versus_bicubic import bicubic_up
from models import is_flow
from utils import precision
from utils.errors import ConfigError
from utils.options import MAX_SAMPLES, check_temperatures
from utils.recipe_keys import Key, declare_section
from utils.image import to_uint8, write_image
from utils.metrics import psnr_y
from utils.output_folder import OutputFolder

TEST_MODES = ("lq_folder", "fullimage", "paired")  # whole images, each file once
STRIP_SAMPLES = 4  # samples per temperature shown in an image's comparison strip
MIN_TILE = 16  # LR pixels: a smaller tile is mostly overlap and border, thousands of passes for one image


def check_tile(value: int, where: str) -> int:
    """`test.tile` (test.py's --tile): 0 (whole images) or a side of at least MIN_TILE LR pixels."""
    if value != 0 and not MIN_TILE <= value:
        raise ConfigError(f"`{where}` (--tile) must be 0 (whole images) or at least {MIN_TILE} LR pixels, got "
                          f"{value}: a smaller tile is mostly overlap and border, thousands of network passes for one "
                          "image")
    return value
Result = Tuple[str, Any, Row]  # (file name, uint8 SR image, its metrics.csv row)


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


declare_section("test", {  # test.py's settings
    "heats": Key(list, [0.0], "SRFlow temperatures test.py writes (0: the mean image)", check=check_temperatures),
    "samples": Key(int, 1, "SRFlow results per temperature above 0; with 2 or more, `diversity` and `sample_std`",
                   at_least=1, below=MAX_SAMPLES + 1),
    "tile": Key(int, 0, f"super-resolve in LR tiles of this size (0: whole images; else at least {MIN_TILE})",
                check=check_tile),
    "tile_overlap": Key(int, 16, "overlap of those tiles", at_least=0),
    # that it leaves something of each HQ image is checked once the image sizes are known
    "crop_border": Key(int, None, "border left out of the Y-PSNR/SSIM (absent: the scale)", at_least=0),
})


def result_name(stem: str, temperature: Optional[float], sample: int) -> str:
    return f"{stem}.png" if temperature is None else f"{stem}_t{temperature:g}_s{sample}.png"


class Tester:
    """One generator, the recipe's `test:` settings, and the images of one set after another."""

    def __init__(self, opt: Dict[str, Any], overwrite: bool = False, report: Callable[[str], None] = tqdm.write):
        self.opt, self.report, self.overwrite = opt, report, overwrite
        settings = opt["test"]  # validated by parse_options (the keys above)
        self.samples = settings["samples"]
        self.device = pick_device(opt)
        self.net, self.weights = load_generator(opt, device=self.device)
        self.dtype, note = precision.autocast_dtype(opt["precision"], self.device, f"precision: {opt['precision']}")
        report(f"generator `{opt['name']}`: {self.weights} on {self.device}" + (" in bf16" if self.dtype else ""))
        if note:
            report(note)
        given = list(dict.fromkeys(float(t) for t in settings["heats"]))  # a repeated one would overwrite itself
        self.temperatures: List[Optional[float]] = given if is_flow(self.net) else [None]
        self.tile = settings["tile"]
        self.overlap = settings["tile_overlap"]
        self.crop = opt["scale"] if settings["crop_border"] is None else settings["crop_border"]
        self.lpips, self.lpips_note = None, None  # loaded when the first set with HQ images needs it
        self.plots = importlib.util.find_spec("matplotlib") is not None
        if not self.plots:
            report("plots skipped: matplotlib is not installed (pip install -r requirements.txt)")

    def relay(self, caught: List[warnings.WarningMessage]) -> None:
        for w in caught:
            self.report(str(w.message))

    def count(self, temperature: Optional[float]) -> int:
        return self.samples if temperature else 1

    def settings(self, has_hq: bool) -> Dict[str, Any]:
        """What the results depend on; a resumed run must match it."""
        weights = self.weights.resolve()
        return {"weights": str(weights), "weights_bytes": weights.stat().st_size,
                "weights_mtime_ns": weights.stat().st_mtime_ns, "temperatures": self.temperatures,
                "samples": self.samples, "tile": self.tile, "tile_overlap": self.overlap,
                "crop_border": self.crop, "manual_seed": self.opt["manual_seed"], "device": self.device.type,
                "lpips": has_hq and self.lpips is not None,
                **({"precision": "bf16"} if self.dtype else {})}  # float32's settings are what they always were

    def run(self) -> Dict[str, List[Row]]:
        """Every test set; returns each set's summary rows (one per temperature)."""
        return {key: self.run_set(key, opt_ds) for key, opt_ds in find_test_sets(self.opt).items()}

    def run_set(self, key: str, opt_ds: Dict[str, Any]) -> List[Row]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = build_dataset(opt_ds, self.opt, key)
        self.relay(caught)
        self.check_crop(key, dataset)
        out_dir = Path(self.opt["path"]["results_root"]) / opt_ds["name"]
        has_hq = any(hq for hq, _ in dataset.pairs)
        if has_hq and self.lpips_note is None:
            self.lpips, self.lpips_note = load_lpips(self.device)
            if self.lpips_note:
                self.report(self.lpips_note)
        sources = [hq or lq for hq, lq in dataset.pairs]
        with OutputFolder(out_dir, "test.py", "write elsewhere (--set path.results_root=DIR, or --output)") as output:
            self.claim_files(output, key, sources, out_dir)
            return self.run_images(dataset, opt_ds["name"], sources, out_dir, has_hq)

    def run_images(self, dataset: Any, name: str, sources: List[Path], out_dir: Path, has_hq: bool) -> List[Row]:
        table = ResultsTable(out_dir, [p.name for p in sources], self.settings(has_hq), self.overwrite)
        finished = 0
        for i in tqdm(range(len(dataset)), desc=f"test {name}", unit="image", dynamic_ncols=True):
            files = [result_name(sources[i].stem, t, k) for t in self.temperatures for k in range(self.count(t))]
            if not self.overwrite and table.done(sources[i].name, files,
                                                 [cell(t) for t in self.temperatures if self.count(t) > 1]):
                finished += 1
                continue
            try:
                self.run_image(dataset, i, out_dir, table)
            except OSError as e:  # a full or read-only disk: every file written so far is whole
                raise ConfigError(f"{e}; the results of the images before {sources[i].name} are kept in {out_dir}: "
                                  f"run test.py again (without --overwrite) to go on from there") from None
        if finished:
            self.report(f"{finished} image(s) already had their results in {out_dir}, kept (--overwrite redoes them)")
        return self.finish(name, out_dir, table, has_hq)

    def claim_files(self, output: OutputFolder, key: str, sources: Sequence[Path], out_dir: Path) -> None:
        """Every file the set's results will be written to, claimed before any is written: none may be a file
        test.py did not write, and no two inputs may give one result name."""
        by_stem: Dict[str, Path] = {}
        for source in sources:
            other = by_stem.setdefault(source.stem.casefold(), source)
            if other != source:
                raise ConfigError(f"`datasets.{key}`: {other} and {source} would both give the results "
                                  f"{source.stem}*.png in {out_dir}: rename one, or put them in separate test sets")
        files = [out_dir / result_name(s.stem, t, k) for s in sources for t in self.temperatures for k in range(self.count(t))]
        files += [out_dir / "comparisons" / f"{s.stem}.png" for s in sources]
        files += [out_dir / name for name in TABLE_FILES]
        if self.plots and self.temperatures != [None]:
            files.append(out_dir / "temperature_sweep.png")
        output.claim(files, overwrite_own=True)  # own results: kept or redone by ResultsTable's rules

    def finish(self, name: str, out_dir: Path, table: ResultsTable, has_hq: bool) -> List[Row]:
        """summary.csv, the printed table and the temperature-sweep plot."""
        summary = table.summary([cell(t) for t in self.temperatures])
        self.report(f"{name}: means per temperature (LR-PSNR worst: each image's worst sample, averaged)\n"
                    + format_summary(summary))
        if has_hq and self.lpips is None and any(self.count(t) > 1 for t in self.temperatures):
            self.report("no diversity score: it needs LPIPS (see above); sample_std, the mean per-pixel standard "
                        "deviation across samples (0-255), stands in for it")
        sweep = sweep_figure(summary) if self.plots and self.temperatures != [None] else None
        if sweep is not None:
            save_figure(sweep, out_dir / "temperature_sweep.png", self.tensorboard_dir(),
                        f"test/{name}/temperature_sweep")
        self.report(f"results, metrics.csv and summary.csv in {out_dir}")
        return summary

    def check_crop(self, key: str, dataset: Any) -> None:
        """`test.crop_border` must leave something of every HQ image (sizes from the files' headers)."""
        for hq, _ in dataset.pairs:
            try:
                side = min(image_size(hq)) if hq else math.inf
            except ValueError:  # unreadable: skipped with a note when its turn comes
                continue
            if 2 * self.crop >= side:
                raise ConfigError(f"`test.crop_border` {self.crop} leaves nothing of {hq} (shorter side {side}) in "
                                  f"`datasets.{key}`: set it below half the shorter side of the smallest image")

    def tensorboard_dir(self) -> Optional[Path]:
        if not self.opt.get("use_tb_logger") or importlib.util.find_spec("tensorboard") is None:
            return None
        return Path(self.opt["path"]["results_root"]) / "tb_logger"

    def load_item(self, dataset: Any, index: int) -> Optional[Dict[str, Any]]:
        """The dataset's item, or None (said) when its file cannot be decoded."""
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
            return None
        return item

    def run_image(self, dataset: Any, index: int, out_dir: Path, table: ResultsTable) -> None:
        item = self.load_item(dataset, index)
        if item is None:
            return
        source = Path(item.get("hq_path") or item["lq_path"])
        lq = item["lq"][None].to(self.device)
        hq = to_uint8(item["hq"]) if "hq" in item else None
        torch.manual_seed(zlib.crc32(f"{self.opt['manual_seed']}/{source.name}".encode()))  # resumable draws
        with precision.autocast(self.device, self.dtype):  # the network alone: metrics, LPIPS included, in float32
            lr_enc = None if self.tile else conditioning(self.net, lq)  # one RRDB pass for every result
        results: Dict[Optional[float], List[Result]] = {}
        stats: List[Row] = []
        for t in self.temperatures:
            results[t] = [self.result(lq, lr_enc, hq, source, t, k, out_dir) for k in range(self.count(t))]
            if len(results[t]) > 1:
                stats.append(as_row({"image": source.name, "temperature": t,
                                     **sample_statistics([r[1] for r in results[t]], hq, self.lpips)}))
            self.report(describe(source.name, t, [r[2] for r in results[t]]))
        bicubic = bicubic_up(item["lq"], self.opt["scale"])
        write_strip(out_dir / "comparisons" / f"{source.stem}.png", strip_rows(bicubic, results, hq, self.crop))
        table.put(source.name, [r[2] for rs in results.values() for r in rs], stats)

    def result(self, lq: torch.Tensor, lr_enc: Optional[tuple], hq: Any, source: Path, t: Optional[float],
               k: int, out_dir: Path) -> Result:
        """Super-resolve once, write the PNG, score it."""
        with precision.autocast(self.device, self.dtype):
            sr = super_resolve(self.net, lq, t or 0.0, tile=self.tile, overlap=self.overlap, name=source.name,
                               report=self.report, lr_enc=lr_enc)
        image = to_uint8(sr.image[0])
        file = result_name(source.stem, t, k)
        write_image(out_dir / file, image)
        row: Dict[str, Any] = {"file": file, "image": source.name, "temperature": t, "sample": k,
                               "temperature_used": sr.temperature, "diverged": sr.diverged}
        if hq is not None:
            scores, missing = score(image, hq, self.opt["scale"], self.crop, self.lpips)
            row.update(scores)
            if missing and k == 0:
                self.report(f"{source.name} is {hq.shape[0]}x{hq.shape[1]}, too small for: {', '.join(missing)}")
        return file, image, as_row(row)


def describe(image: str, temperature: Optional[float], rows: Sequence[Row]) -> str:
    """One line per image and temperature: the means over its samples."""
    at = "" if temperature is None else f" t={temperature:g}"
    if len(rows) > 1:
        at += f" ({len(rows)} samples, means)"
    parts = []
    for key, label, unit in (("psnr_y", "PSNR-Y", " dB"), ("ssim_y", "SSIM-Y", ""), ("psnr_rgb", "PSNR-RGB", " dB"),
                             ("lr_psnr", "LR-PSNR", " dB"), ("lpips", "LPIPS", "")):
        values = [float(r[key]) for r in rows if r.get(key, "") != ""]
        if values:
            parts.append(f"{label} {math.fsum(values) / len(values):.{2 if unit else 4}f}{unit}")
    return f"{image}{at}: " + (", ".join(parts) if parts else "written (no HQ image to score against)")


def strip_rows(bicubic: Any, results: Dict[Optional[float], List[Result]], hq: Any, crop: int) -> List[List[Panel]]:
    """bicubic | t=0 | the samples (up to STRIP_SAMPLES) | their per-pixel std | HQ: a row per temperature
    above 0 (one row when there is none), each panel labelled with its temperature and Y-PSNR."""
    def sr_panel(t: Optional[float], k: int, result: Result) -> Panel:
        name = "SR" if t is None else f"t={t:g}" + (f" s{k}" if t else "")
        return name, "" if hq is None else f"PSNR-Y {float(result[2]['psnr_y']):.2f} dB", result[1]

    first = [("bicubic", "" if hq is None else f"PSNR-Y {psnr_y(bicubic, hq, crop):.2f} dB", bicubic)]
    first += [sr_panel(t, 0, rs[0]) for t, rs in results.items() if not t]  # t=0, or the plain network's SR
    last = [] if hq is None else [("HQ", "", hq)]
    rows = []
    for t, rs in results.items():
        if not t:
            continue
        samples = [sr_panel(t, k, r) for k, r in enumerate(rs[:STRIP_SAMPLES])]
        if len(rs) > 1:
            spread, top = heat_map(std_map([r[1] for r in rs]).mean(axis=2))
            samples.append((f"std t={t:g} ({len(rs)})", f"0 .. {top:.1f} (0-255)", spread))
        rows.append(first + samples + last)
    return rows or [first + last]


def run_test(opt: Dict[str, Any], overwrite: bool = False,
             report: Callable[[str], None] = tqdm.write) -> Dict[str, List[Row]]:
    """Run test.py on a parsed recipe; returns each test set's summary rows. Each set's results folder is
    locked while its images are done, and no file in it that test.py did not write is written over."""
    find_test_sets(opt)  # before the model: a recipe without test sets is one line
    return Tester(opt, overwrite, report).run()
