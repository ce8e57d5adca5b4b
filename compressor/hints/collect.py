"""Step 1 of PURSUhInT: the N x C representation of every candidate layer (001 §3.1).

One pass over the data; each hooked feature map is reduced to its spatial mean inside the
hook and written into a preallocated N x C buffer, so memory is N x sum(C) plus one batch of
activations, never N x C x H x W.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from compressor.models.features import feature_hooks

from ..distributed import World, all_gather


def sample_indices(num_items: int, samples: int, seed: int = 0) -> np.ndarray:
    """``samples`` distinct dataset indices drawn with a fixed seed (all of them if fewer exist)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    order = np.random.default_rng(seed).permutation(num_items)
    return np.sort(order[: min(samples, num_items)])


@torch.inference_mode()
def collect_representations(
    model: nn.Module,
    data: Dataset,
    indices: Sequence[int] | None = None,
    preact: bool = False,
    batch_size: int = 256,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    world: World | None = None,
) -> list[np.ndarray]:
    """Spatially averaged features of the chosen hint points over every item of ``data``.

    Args:
        model: a zoo model (feature contract), used in eval mode.
        data: yields ``(image, label, ...)``; use ``Subset`` for the N samples.
        indices: 1-based hint points; None = every candidate.
        preact: before the sub-block's last ReLU instead of after it.
        world: under torchrun, each rank computes every ``size``-th item and the ranks gather the
            rows back into the data's order (every rank returns the whole arrays).

    Returns:
        One float32 array (N, C_i) per chosen point, in the order of ``indices``.
    """
    model.eval().to(device)
    world = world or World()
    if world.distributed:
        data = Subset(data, list(range(world.rank, len(data), world.size)))
    n = len(data)
    buffers: dict[int, torch.Tensor] = {}
    cursor = [0, 0]  # [start, end) rows of the current batch

    def sink(index: int, feature: torch.Tensor) -> None:
        pooled = feature.float().mean(dim=(2, 3))
        if index not in buffers:
            buffers[index] = torch.empty(n, pooled.shape[1], dtype=torch.float32)
        buffers[index][cursor[0] : cursor[1]] = pooled.cpu()

    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    with feature_hooks(model, indices, sink, preact=preact) as chosen:
        # disable=None: tqdm switches itself off when stderr is not a terminal
        bar = tqdm(total=n, desc="layer representations", unit="img", disable=None if progress else True, leave=False)
        for batch in loader:
            images = batch[0].to(device, non_blocking=True)
            cursor[1] = cursor[0] + len(images)
            model(images)
            cursor[0] = cursor[1]
            bar.update(len(images))
        bar.close()
    mine = [buffers[i].numpy() for i in chosen]
    if not world.distributed:
        return mine
    shards = all_gather(mine, world)  # rank r holds items r, r + size, r + 2 size, ...
    total = sum(len(s[0]) for s in shards)
    merged = []
    for j in range(len(mine)):
        rows = np.empty((total, mine[j].shape[1]), dtype=np.float32)
        for rank, shard in enumerate(shards):
            rows[rank :: world.size] = shard[j]
        merged.append(rows)
    return merged


def subset(data: Dataset, samples: int, seed: int = 0) -> Subset:
    return Subset(data, sample_indices(len(data), samples, seed).tolist())
