"""torch.distributed from the environment (torchrun, or SLURM through submitit)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int | None:
    """The world size a launcher (torchrun, elastic launch, SLURM tasks) gave this process, None if none did."""
    raw = os.environ.get("WORLD_SIZE")
    return None if raw is None else int(raw)


def init_distributed() -> DistEnv:
    """Join the process group described by RANK/WORLD_SIZE/LOCAL_RANK (one process per GPU).

    Without those variables this is a single process on one GPU if available, else the CPU.
    """
    world_size = launched_world_size() or 1
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank, world_size, local_rank, device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def hostnames() -> list[str]:
    """The host name of every rank, in rank order (where a run's processes ran)."""
    import socket

    name = socket.gethostname()
    if not (dist.is_available() and dist.is_initialized()):
        return [name]
    names: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(names, name)
    return names


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
