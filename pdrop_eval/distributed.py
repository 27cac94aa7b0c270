"""torchrun awareness: which process this is, which samples it takes, and waiting for the others.

Launched by `torchrun --nproc_per_node N run_eval.py ...` (one or several nodes), each rank evaluates a disjoint
shard and writes its own prediction files; rank 0 merges, scores and reports once all have finished. Without
torchrun this is a world of one and every function is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from pdrop_eval.errors import PdropEvalError

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
    """Join the process group torchrun set up: NCCL between GPUs (each rank bound to its own), gloo on CPU.

    The timeout is generous because ranks wait at a barrier while rank 0 merges, scores and reports.
    """
    if world.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))


def barrier(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.barrier()


def broadcast_from_main(value: T, world: World) -> T:
    """Rank 0's `value` on every rank: for decisions only rank 0 can make (whether it holds the run's lock), so all
    ranks act on the same answer instead of the others waiting at a barrier rank 0 never reaches."""
    if world.size == 1 or not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], world: World) -> list[T]:
    """Every size-th item from rank: disjoint, together complete, balanced to within one."""
    return list(items[world.rank :: world.size])


def device_for(requested: str, world: World) -> torch.device:
    """`auto` takes this rank's GPU when there is one, else the CPU; anything else must exist on this machine."""
    if requested == "auto":
        return torch.device(f"cuda:{world.local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise PdropEvalError(f"--device {requested!r} is not a device: use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and device.index is None and world.size > 1:
        device = torch.device(f"cuda:{world.local_rank}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise PdropEvalError(
                f"--device {requested} asks for a GPU this machine does not have ({count} visible): "
                "use --device cpu, or auto"
            )
    elif device.type != "cpu":
        raise PdropEvalError(f"--device {requested!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device
