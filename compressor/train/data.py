"""Loaders for training and evaluation, seeded per epoch so that a resumed run replays exactly."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from ..data import ImageDataset
from ..data.augment import PadCropFlip  # noqa: F401  (re-exported: tests and callers import it from here)
from ..distributed import World


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def train_loader(data: ImageDataset, batch_size: int, workers: int, seed: int, epoch: int, world: World, collate_fn=None) -> DataLoader:
    """Shuffled batches for one epoch; the order and the augmentation depend only on (seed, epoch)."""
    torch.manual_seed(seed * 100_003 + epoch)  # augmentation in this process (workers=0)
    if world.distributed:
        sampler = DistributedSampler(data, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(data, generator=epoch_generator(seed, epoch))
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=len(data) >= 2 * batch_size,  # BN needs > 1 sample; tiny sets keep their last batch
        generator=epoch_generator(seed, epoch),  # seeds the workers' augmentation RNG
        persistent_workers=False,
        collate_fn=collate_fn,
    )


def eval_loader(data: ImageDataset, batch_size: int, workers: int, world: World) -> DataLoader:
    """Each rank evaluates a contiguous, non-overlapping shard; counts are summed across ranks."""
    shard = data if not world.distributed else Subset(data, list(range(world.rank, len(data), world.size)))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
