"""Datasets by `mode`, and the DataLoaders that feed the trainer and evaluators."""
import functools
import random
from typing import Any, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data import full_image_dataset, resized_image_dataset, single_image_dataset
from data.full_image_dataset import FullImageDataset, LQFolderDataset, PairedImageDataset
from data.resized_image_dataset import ResizedImageDataset
from data.sampler import EpochSampler
from data.single_image_dataset import SingleImageDataset
from data.worker_signals import exiting_event, leave_stop_signals_to_the_main_process
from models.srflow.config import QUANT
from utils import dist
from utils.errors import ConfigError
from utils.recipe_keys import REQUIRED, Key, Mapping, Variant, declare_section, recipe_rule
from utils.registry import Registry

DATASETS = Registry("dataset")
ITEM_KEYS = ("hq", "lq", "hq_path", "lq_path")  # what a dataset item may hold: the start of training's `state`
DATASETS.register("single_image_extensible", keys=single_image_dataset.KEYS)(SingleImageDataset)
DATASETS.register("fullimage", keys=full_image_dataset.KEYS)(FullImageDataset)
DATASETS.register("paired", keys=full_image_dataset.PAIRED_KEYS)(PairedImageDataset)
DATASETS.register("lq_folder", keys=full_image_dataset.LQ_FOLDER_KEYS)(LQFolderDataset)
DATASETS.register("imagefolder", keys=resized_image_dataset.KEYS)(ResizedImageDataset)

# The keys of every `datasets.<name>` section, whatever its mode.
DATASET_KEYS = {
    "name": Key(str, "dataset", "a name for the log", path="name"),
    "mode": Key(str, REQUIRED, "the dataset: " + ", ".join(DATASETS.names())),
    "phase": Key(str, None, "train or val (default: the section's name up to its first `_`)"),
    "n_workers": Key(int, 0, "DataLoader worker processes", at_least=0),
    "batch_size": Key(int, 1, "images per batch", at_least=1),
    "scale": Key(int, None, "HQ/LQ size ratio (default: the recipe's `scale`)", at_least=1),
    "force_multiple": Key(int, 1, "LQ sides are trimmed to a multiple of this", at_least=1),
    "cache": Key(bool, False, "keep decoded images in memory"),
    "quant": QUANT,
    "data_type": Key(str, None, "accepted for DLAS's recipes; no effect"),
}
declare_section("datasets", Mapping(Variant("mode", DATASETS, DATASET_KEYS), "datasets by name: `train`, `val`..."))


@recipe_rule(order=20)  # after the recipe's scale is settled (trainer/run_keys.py)
def fill_dataset_scale_and_phase(opt: dict) -> None:
    """Each dataset's `scale` defaults to the recipe's, its `phase` to its name up to the first `_`."""
    for name, ds in opt["datasets"].items():
        if ds.get("scale") is None:
            ds["scale"] = opt["scale"]
        ds["phase"] = ds.get("phase") or name.split("_")[0]


def build_dataset(opt_dataset: dict, opt: dict, phase: str, where: Optional[str] = None) -> Dataset:
    """The dataset `opt_dataset['mode']` names; `scale` falls back to the recipe's top-level `scale`, the
    dataset's `phase` to `phase`.

    Unknown keys are utils/options.py's to catch; mistakes found here raise ConfigError naming `where`
    (default `datasets.<phase>`).
    """
    where = where or f"datasets.{phase}"
    if opt_dataset.get("mode") is None:
        raise ConfigError(f"`{where}.mode` is required; known: {', '.join(DATASETS.names())}")
    cls = DATASETS.get(opt_dataset["mode"], f"{where}.mode")
    opt_dataset = {**opt_dataset, "phase": opt_dataset.get("phase") or phase}
    if "scale" not in opt_dataset and "scale" in opt:
        opt_dataset["scale"] = opt["scale"]
    try:
        return cls(opt_dataset)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _init_worker(exiting: Any, worker_id: int) -> None:
    """Seed numpy (DataLoader seeds torch and `random` per worker, not numpy) from the same value; stop
    signals are the main process's (data/worker_signals.py). OpenCV runs single-threaded in a worker, as
    DataLoader makes torch do: N workers each starting a thread per core oversubscribe the CPU that the main
    process needs to feed the GPU."""
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    leave_stop_signals_to_the_main_process(exiting)


def build_dataloader(dataset: Dataset, opt_dataset: dict, phase: str, seed: int) -> DataLoader:
    """Training: shuffled by an EpochSampler (see data/sampler.py for per-epoch order and mid-epoch resume,
    reached as `loader.sampler`), `batch_size`, `n_workers` persistent workers, full batches only.
    Other phases: in order, batch 1 unless `batch_size` is given.
    """
    workers = opt_dataset.get("n_workers") or DATASET_KEYS["n_workers"].default  # checked by parse_options
    common = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                  worker_init_fn=functools.partial(_init_worker, exiting_event() if workers else None),
                  generator=torch.Generator().manual_seed(seed))
    batch_size = opt_dataset.get("batch_size") or DATASET_KEYS["batch_size"].default
    if phase != "train":
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
    sampler = EpochSampler(len(dataset), seed, min_samples=batch_size, rank=dist.rank(), world_size=dist.world_size())
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
