"""The training order: reproducible per epoch, and resumable in the middle of one."""
import math
from typing import Iterator, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Sampler

SampleKey = Union[int, Tuple[int, int]]


def split_key(key: SampleKey, size: int) -> Tuple[int, int]:
    """A dataset key -> (index, sample_seed). A plain index (validation, testing) is its own seed, so an item's
    random draws (crop, flips, corruptions) are the same at every pass and in every worker.

    IndexError past the end, which also lets `for item in dataset` stop.
    """
    index, seed = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), int(key))
    if not 0 <= index < size:
        raise IndexError(f"index {index} out of range for {size} items")
    return index, seed


class EpochSampler(Sampler):
    """Yields (index, sample_seed) keys in an order that is a pure function of (seed, epoch).

    An epoch has `num_samples = max(dataset size, min_samples)` keys: whole shuffled permutations back to
    back, so a folder with fewer images than a batch still fills batches. `sample_seed` drives that item's
    random crop and flips, so what a batch contains depends neither on the number of workers nor on where
    the run was restarted.

    Resuming mid-epoch: with B batches of that epoch already trained (B = step % (num_samples // batch_size)
    when every epoch is complete batches, as with drop_last), call `set_epoch(epoch, start_index=B * batch_size)`
    before iterating the DataLoader; it then yields exactly the batches the uninterrupted run would have.
    Call `set_epoch(epoch)` before each later epoch.
    """

    def __init__(self, size: int, seed: int, min_samples: int = 1, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("EpochSampler needs a non-empty dataset")
        self.size, self.seed = size, seed
        self.rank, self.world_size = rank, world_size
        self.batch_size = min_samples
        # Every process draws the same global order; each takes its share of every global batch, so N
        # processes at batch B train on exactly the batches one process at batch N*B would.
        global_batch = min_samples * world_size
        self.num_samples = max(size, global_batch) // global_batch * min_samples if world_size > 1 \
            else max(size, min_samples)
        self.epoch, self.start_index = 0, 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        if not 0 <= start_index <= self.num_samples:
            raise ValueError(f"start_index {start_index} outside 0..{self.num_samples}")
        self.epoch, self.start_index = epoch, start_index

    def __len__(self) -> int:
        return self.num_samples - self.start_index

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        mixed = np.random.SeedSequence([self.seed % 2 ** 63, self.epoch]).generate_state(1, np.uint64)[0]
        g = torch.Generator().manual_seed(int(mixed))
        total = self.num_samples * self.world_size
        repeats = math.ceil(total / self.size)
        order = torch.cat([torch.randperm(self.size, generator=g) for _ in range(repeats)])[:total]
        seeds = torch.randint(0, 2 ** 62, (total,), generator=g)
        if self.world_size > 1:
            mine = torch.arange(total).view(-1, self.world_size, self.batch_size)[:, self.rank].flatten()
            order, seeds = order[mine], seeds[mine]
        for i in range(self.start_index, self.num_samples):
            yield int(order[i]), int(seeds[i])
