"""Stopping a training run on request: SLURM's pre-timeout signal (``SIGUSR2``) asks the run to save a
checkpoint at the next optimizer step and exit, so a requeued job loses at most the step in flight.

The signal only sets a flag (:func:`listen`); the training loop asks :func:`requested` after each
step. In a distributed run every rank must stop after the same step (saving a checkpoint is
collective), so the ranks agree: one rank's request stops them all.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

SIGNAL = signal.SIGUSR2
#: Exit status of a run that stopped on the signal after saving its checkpoint (EX_TEMPFAIL: run it again).
EXIT_CODE = 75

_flag = threading.Event()


def _on_signal(signum, frame) -> None:
    _flag.set()


def listen() -> None:
    """From now on, :data:`SIGNAL` asks this process's run to stop (main thread only; elsewhere a no-op)."""
    _flag.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(SIGNAL, _on_signal)


def requested(device: torch.device | None = None) -> bool:
    """True once a stop was requested, here or (distributed) on any rank. Collective when distributed:
    every rank calls it at the same point."""
    stop = _flag.is_set()
    if dist.is_available() and dist.is_initialized():
        flag = torch.tensor([int(stop)], device=device if device is not None and device.type == "cuda" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
    return stop


class Stopped(SystemExit):
    """Raised after the checkpoint is saved: the process exits with :data:`EXIT_CODE`."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_CODE)
        self.message = message
