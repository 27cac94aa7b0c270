"""torchrun awareness: which process this is, which samples it takes, and waiting for the others.

Launched by `torchrun --nproc_per_node N run_eval.py ...` (one or several nodes), each rank evaluates a disjoint
shard and writes its own prediction files; rank 0 merges, scores and reports once all have finished. Without
torchrun this is a world of one and every function is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init(world: World, device: torch.device) -> None:
    """Join the process group torchrun set up: NCCL between GPUs, gloo on CPU."""
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.barrier()


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], world: World) -> list[T]:
    """Every size-th item from rank: disjoint, together complete, balanced to within one."""
    return list(items[world.rank :: world.size])


def device_for(requested: str, world: World) -> torch.device:
    """`auto` takes this rank's GPU when there is one, else the CPU."""
    if requested == "auto":
        return torch.device(f"cuda:{world.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None and world.size > 1:
        return torch.device(f"cuda:{world.local_rank}")
    return device
