"""Process-group helpers shared by training and hint selection: the same code runs alone or under ``torchrun --nproc_per_node N``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(use_cuda: bool) -> World:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on GPU)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_gather(obj: Any, world: World) -> list[Any]:
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Make every rank's buffers (BN running statistics, memory banks) rank 0's.

    DDP all-reduces gradients, so parameters agree, but each rank updates its buffers from its
    own batches after DDP's per-forward broadcast; without this the ranks would evaluate and end
    with slightly different BN statistics.
    """
    if world.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    """Leave the process group. The barrier makes every rank enter the teardown together: rank 0
    arrives late (it writes the artifacts), and a rank tearing down alone could hang in gloo."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
