"""torch.distributed from the environment (torchrun, or SLURM through submitit), and stopping a run on
request in step on every rank.

Stopping: every signal SLURM stops a job with asks a training run to save a checkpoint at the next
optimizer step and exit, so a requeued job loses at most the step in flight: ``SIGTERM`` (preemption,
``scancel``, ``scontrol requeue``, a node drain, the time limit itself; SIGKILL follows after GraceTime or
KillWait), ``SIGUSR2`` (the warning before the time limit, ``--signal``) and ``SIGUSR1`` (a site's choice
of warning signal). The signal only sets a flag (:func:`listen_for_stop`); the training loop asks :func:`stop_requested` after each step. In a
distributed run every rank must stop after the same step (saving a checkpoint is collective), so the
ranks agree: one rank's request stops them all.
"""

from __future__ import annotations

import os
import signal
import threading
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


# ---- stopping on request (SLURM's stop signals)

#: The signal the job's own process passes on to the stage (and SLURM's warning before the time limit).
STOP_SIGNAL = signal.SIGUSR2
#: Every signal that asks a run to save and stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
#: Exit status of a run that stopped on the signal after saving its checkpoint (EX_TEMPFAIL: run it again).
STOP_EXIT_CODE = 75

_stop_flag = threading.Event()
_stop_signal: list[str] = []  # the name of the first signal received


def _on_stop_signal(signum, frame) -> None:
    if not _stop_flag.is_set():
        _stop_signal[:] = [signal.Signals(signum).name]
    _stop_flag.set()


def listen_for_stop() -> None:
    """From now on, any of :data:`STOP_SIGNALS` asks this process's run to stop (main thread only; elsewhere a no-op)."""
    _stop_flag.clear()
    _stop_signal.clear()
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _on_stop_signal)


def ignore_stop_signals() -> None:
    """Ignore :data:`STOP_SIGNALS` in this process (a launcher, a stage that has not started training): the
    training processes it starts listen for them (:func:`listen_for_stop`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def stop_signal_name() -> str:
    """The signal that asked this process to stop (``SIGTERM``, ...), or ``a rank`` where another rank's did."""
    return _stop_signal[0] if _stop_signal else "another rank's signal"


def stop_requested(device: torch.device | None = None) -> bool:
    """True once a stop was requested, here or (distributed) on any rank. Collective when distributed:
    every rank calls it at the same point."""
    stop = _stop_flag.is_set()
    if dist.is_available() and dist.is_initialized():
        flag = torch.tensor([int(stop)], device=device if device is not None and device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
    return stop


class Stopped(SystemExit):
    """Raised after the checkpoint is saved: the process exits with :data:`STOP_EXIT_CODE`."""

    def __init__(self, message: str) -> None:
        super().__init__(STOP_EXIT_CODE)
        self.message = message
