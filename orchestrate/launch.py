"""One process, several devices: a stage started once launches one DDP process per device.

``dvc repro`` (or any plain ``secvit pretrain ...``) inside an allocation with several GPUs
starts each stage as one process; :func:`per_device` then runs the stage function in one
process per visible GPU through torch's elastic launcher (what ``torchrun --standalone``
does), so the stage trains with DDP on all of them. The stage's global batch is unchanged:
the training code derives the gradient accumulation from the world size.

A process that is already part of a distributed run (torchrun, a multi-task SLURM job: the
``WORLD_SIZE`` variable is set) runs the function itself.

Devices: the visible CUDA GPUs; without CUDA, ``SECVIT_CPU_DEVICES`` (default 1) CPU
processes using gloo, a stand-in for GPUs in tests and on laptops.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from secvit.errors import SecvitError

CPU_DEVICES_VAR = "SECVIT_CPU_DEVICES"
T = TypeVar("T")


def visible_devices() -> int:
    """Visible CUDA GPUs, or (no CUDA) the ``SECVIT_CPU_DEVICES`` stand-in count (default 1)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    raw = os.environ.get(CPU_DEVICES_VAR, "1")
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise SecvitError(f"{CPU_DEVICES_VAR} must be a positive integer, got {raw!r}")
    return count


def in_distributed_run() -> bool:
    """True inside a process that a launcher (torchrun, SLURM tasks) already placed in a process group."""
    from secvit.engine.distributed import launched_world_size

    return launched_world_size() is not None


def single_node_note(devices: int) -> str | None:
    """The one line a stage prints when started as one process inside a SLURM allocation of several
    nodes (plain ``dvc repro`` in ``salloc -N 2``): it trains on this node's devices only."""
    raw = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES")
    nodes = int(raw) if raw and raw.isdigit() else 1
    if nodes <= 1:
        return None
    return (
        f"note: this SLURM allocation has {nodes} nodes; this stage uses this node only ({devices} devices): to train on "
        f"several nodes, run it with `--executor slurm` and slurm.stages.<kind>.nodes: {nodes} (or under torchrun on every node)"
    )


def quiet_launcher_logs() -> None:
    """Keep torch's launcher from logging a failed process's traceback and the stopping of the others:
    the failure is reported once, in one line (the process's own output still shows everything)."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def per_device(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` here, or in one DDP process per visible device; returns rank 0's result.

    ``fn`` and ``args`` must be picklable (the processes are spawned).
    """
    devices = 1 if in_distributed_run() else visible_devices()
    if not in_distributed_run():
        note = single_node_note(devices)
        if note:
            print(note, file=sys.stderr, flush=True)
    if devices == 1:
        return fn(*args)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun's rule: one thread per process unless set; the launched processes inherit it
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=devices,
        run_id=f"secvit-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # standalone: a free port on this host
        max_restarts=0,
        monitor_interval=0.5,
    )
    quiet_launcher_logs()
    from secvit.engine.distributed import STOP_EXIT_CODE, STOP_SIGNAL

    # SLURM's pre-timeout signal is for the training processes (they checkpoint and stop), not for
    # their launcher; ignored here, it stays ignored in them until they listen for it
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
    try:
        results = elastic_launch(config, fn)(*args)
    except ChildFailedError as e:
        if any(f.exitcode == STOP_EXIT_CODE for f in e.failures.values()):
            raise SystemExit(STOP_EXIT_CODE) from None  # they stopped on request, checkpoint saved
        rank, failure = e.get_first_failure()
        message = failure.message if isinstance(failure.message, str) else failure.message.get("message", "")
        first = message.strip().splitlines()[0] if message and message.strip() else f"exit code {failure.exitcode}"
        raise SecvitError(f"process {rank} of {devices} failed: {first}") from None
    return results[0]


def run_stage(command: str, fn: Callable[..., T], executor: str | None, **options: Any) -> T | None:
    """Run the stage ``secvit <command> <options>``: as a SLURM job (``--executor slurm`` or
    ``$SECVIT_EXECUTOR``; waits for it and returns None), else ``fn(**options)`` here, once per
    visible device (:func:`per_device`). ``options`` holds ``profile`` and ``params``."""
    from secvit.orchestrate.slurm import run_on_slurm, use_slurm

    if use_slurm(executor):
        run_on_slurm(command, options, options["profile"], options["params"])
        return None
    # the launcher names processes after the function: a partial carries fn's name
    return per_device(functools.update_wrapper(functools.partial(fn, **options), fn))
