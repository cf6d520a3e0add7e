"""test.py's tables of one result folder, kept on disk after every image so that a run can resume:

- `metrics.csv`: one row per written image (`file` relative to the folder, `image`, `temperature`, `sample`,
  `temperature_used`, `diverged`, then the metrics);
- `diversity.csv`: one row per image and temperature with two or more samples (`sample_std`, and with LPIPS
  the challenge's global and local best and diversity score);
- `summary.csv`: one row per temperature, written at the end;
- `settings.json`: what made the results (weights, temperatures, samples, ...). A run with other settings
  refuses to mix its results with these, unless told to replace them (test.py's `--overwrite`).
Cells are kept as the strings the CSV holds, so a resumed run writes the same bytes as an uninterrupted one.
"""
import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

from utils.errors import ConfigError
from utils.files import atomic_write_text

Row = Dict[str, str]
ROW_KEYS = ["file", "image", "temperature", "sample", "temperature_used", "diverged"]
METRICS = ["psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lr_psnr", "lpips"]
STAT_KEYS = ["image", "temperature", "samples", "sample_std", "lpips_global_best", "lpips_local_best", "diversity"]
SUMMARY_KEYS = ["temperature", "images", "samples", *METRICS[:5], "lr_psnr_worst", "lpips", "diversity", "sample_std"]
SETTINGS_FILE = "settings.json"
TABLE_FILES = ("metrics.csv", "diversity.csv", "summary.csv", SETTINGS_FILE)  # what a results folder's tables are


def cell(value: Any) -> str:
    """A value as its CSV cell: '' for None, repr-exact floats."""
    return "" if value is None else str(value)


def as_row(values: Dict[str, Any]) -> Row:
    return {k: cell(v) for k, v in values.items()}


def write_csv(path: Path, rows: Sequence[Row], keys: Sequence[str]) -> None:
    """Atomically write the rows, with the columns of `keys` that some row fills."""
    columns = [k for k in keys if any(r.get(k, "") != "" for r in rows)] or list(keys[:1])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> List[Row]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _group(rows: Sequence[Row]) -> Dict[str, List[Row]]:
    groups: Dict[str, List[Row]] = {}
    for row in rows:
        groups.setdefault(row["image"], []).append(row)
    return groups


class ResultsTable:
    """The rows of one result folder, by image, in the order of `images` (the test set's file names).

    Rows of earlier runs are kept when they were made with the same `settings`. Other settings are refused,
    unless `replace` is set: then the tables start empty, and `settings.json` is rewritten only after them,
    so that an interruption at any moment never lets stale rows pass for results of the new settings.
    """

    def __init__(self, folder: Path, images: Sequence[str], settings: Dict[str, Any], replace: bool):
        self.folder, self.images = folder, list(images)
        self.metrics: Dict[str, List[Row]] = {}
        self.stats: Dict[str, List[Row]] = {}
        self.settings = json.loads(json.dumps(settings))  # as it reads back
        stored_path = folder / SETTINGS_FILE
        stored = json.loads(stored_path.read_text()) if stored_path.is_file() else None
        self.unsaved_settings = stored != self.settings
        if not self.unsaved_settings:
            self.metrics = _group(read_csv(folder / "metrics.csv"))
            self.stats = _group(read_csv(folder / "diversity.csv"))
        elif stored is not None and not replace:
            changed = [f"{k} {stored.get(k)} -> {self.settings.get(k)}" for k in sorted(set(stored) | set(settings))
                       if stored.get(k) != self.settings.get(k)]
            raise ConfigError(f"{folder} holds results made with other settings ({'; '.join(changed)}): add "
                              f"--overwrite to redo them, or write elsewhere (--set path.results_root=DIR)")

    def done(self, image: str, files: Sequence[str], stat_temperatures: Sequence[str]) -> bool:
        """Whether the image's rows name exactly `files`, which all exist, and its statistics rows are there."""
        rows = self.metrics.get(image, [])
        stats = self.stats.get(image, [])
        return ([r["file"] for r in rows] == list(files) and all((self.folder / f).is_file() for f in files)
                and [r["temperature"] for r in stats] == list(stat_temperatures))

    def put(self, image: str, rows: List[Row], stats: List[Row]) -> None:
        """Record an image's rows and rewrite the tables."""
        self.metrics[image], self.stats[image] = rows, stats
        self.save()

    def save(self) -> None:
        write_csv(self.folder / "metrics.csv", self.rows(self.metrics), ROW_KEYS + METRICS)
        write_csv(self.folder / "diversity.csv", self.rows(self.stats), STAT_KEYS)
        if self.unsaved_settings:  # after the tables: see the class's docstring
            atomic_write_text(self.folder / SETTINGS_FILE, json.dumps(self.settings, indent=1) + "\n")
            self.unsaved_settings = False

    def rows(self, table: Dict[str, List[Row]]) -> List[Row]:
        return [row for image in self.images for row in table.get(image, [])]

    def summary(self, temperatures: Sequence[str]) -> List[Row]:
        """One row per temperature: means over all its images' rows; lr_psnr_worst is each image's lowest
        over its samples, averaged over images (the challenge's LRPSNR_worst); diversity and sample_std are
        means over images."""
        self.save()
        metric_rows, stat_rows = self.rows(self.metrics), self.rows(self.stats)
        out = []
        for t in temperatures:
            rows = [r for r in metric_rows if r["temperature"] == t]
            summary: Dict[str, Any] = {"temperature": t, "images": len(_group(rows)),
                                       "samples": max((int(r["sample"]) + 1 for r in rows), default=0)}
            for key in METRICS:
                summary[key] = _mean([r.get(key, "") for r in rows])
            worst = [min(float(r["lr_psnr"]) for r in group) for group in _group(rows).values()
                     if all(r.get("lr_psnr") for r in group)]
            summary["lr_psnr_worst"] = _mean(worst)
            stats = [r for r in stat_rows if r["temperature"] == t]
            for key in ("diversity", "sample_std"):
                summary[key] = _mean([r.get(key, "") for r in stats])
            out.append(as_row({k: v for k, v in summary.items() if v is not None}))
        write_csv(self.folder / "summary.csv", out, SUMMARY_KEYS)
        return out


def _mean(values: Sequence[Any]) -> Any:
    numbers = [float(v) for v in values if v != ""]
    return math.fsum(numbers) / len(numbers) if numbers else None


LABELS = {"temperature": ("t", "{}"), "images": ("images", "{}"), "samples": ("samples", "{}"),
          "psnr_y": ("PSNR-Y", "{:.2f}"), "ssim_y": ("SSIM-Y", "{:.4f}"), "psnr_rgb": ("PSNR-RGB", "{:.2f}"),
          "ssim_rgb": ("SSIM-RGB", "{:.4f}"), "lr_psnr": ("LR-PSNR", "{:.2f}"),
          "lr_psnr_worst": ("LR-PSNR worst", "{:.2f}"), "lpips": ("LPIPS", "{:.4f}"),
          "diversity": ("diversity", "{:.2f}"), "sample_std": ("sample_std", "{:.2f}")}


def format_summary(rows: Sequence[Row]) -> str:
    """The summary rows as an aligned text table (columns no row fills are left out)."""
    keys = [k for k in SUMMARY_KEYS if any(r.get(k, "") != "" for r in rows)]
    cells = [[LABELS[k][0] for k in keys]]
    for row in rows:
        cells.append([LABELS[k][1].format(float(row[k]) if "{:." in LABELS[k][1] else row[k]) if row.get(k, "") != ""
                      else "-" for k in keys])
    widths = [max(len(line[i]) for line in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)
