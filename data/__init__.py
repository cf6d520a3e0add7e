"""Datasets by `mode`, and the DataLoaders that feed the trainer and evaluators."""
import functools
import random
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.full_image_dataset import FullImageDataset, LQFolderDataset, PairedImageDataset
from data.options import positive_int
from data.resized_image_dataset import ResizedImageDataset
from data.sampler import EpochSampler
from data.single_image_dataset import SingleImageDataset
from data.worker_signals import exiting_event, leave_stop_signals_to_the_main_process
from utils import dist
from utils.errors import ConfigError
from utils.registry import Registry

DATASETS = Registry("dataset")
ITEM_KEYS = ("hq", "lq", "hq_path", "lq_path")  # what a dataset item may hold: the start of training's `state`
DATASETS.register("single_image_extensible")(SingleImageDataset)
DATASETS.register("fullimage")(FullImageDataset)
DATASETS.register("paired")(PairedImageDataset)
DATASETS.register("lq_folder")(LQFolderDataset)
DATASETS.register("imagefolder")(ResizedImageDataset)


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
    signals are the main process's (data/worker_signals.py)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    leave_stop_signals_to_the_main_process(exiting)


def build_dataloader(dataset: Dataset, opt_dataset: dict, phase: str, seed: int) -> DataLoader:
    """Training: shuffled by an EpochSampler (see data/sampler.py for per-epoch order and mid-epoch resume,
    reached as `loader.sampler`), `batch_size`, `n_workers` persistent workers, full batches only.
    Other phases: in order, batch 1 unless `batch_size` is given.
    """
    workers = opt_dataset.get("n_workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"`datasets.{phase}.n_workers` must be a non-negative integer, got {workers!r}")
    common = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                  worker_init_fn=functools.partial(_init_worker, exiting_event() if workers else None),
                  generator=torch.Generator().manual_seed(seed))
    try:
        batch_size = positive_int(opt_dataset, "batch_size", None if phase == "train" else 1)
    except ConfigError as e:
        raise ConfigError(f"datasets.{phase}: {e}") from None
    if phase != "train":
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
    sampler = EpochSampler(len(dataset), seed, min_samples=batch_size, rank=dist.rank(), world_size=dist.world_size())
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
