"""How one stage command runs: here, as one DDP process per device, or as a SLURM job (``--executor``).

:func:`launch_stage` is where every stage command (``secvit pretrain``, ``evaluate``, ``complexity``,
``detect``, ``segment``) goes: with ``--executor slurm`` (or ``SECVIT_EXECUTOR=slurm``) it becomes a SLURM
job (:func:`secvit.orchestrate.slurm.submit_and_wait`); else it runs here.

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
import logging
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from secvit.engine.distributed import STOP_EXIT_CODE, ignore_stop_signals, launched_world_size
from secvit.errors import SecvitError
from secvit.orchestrate.env import executor_choice
from secvit.device import visible_devices
from secvit.orchestrate.slurm import submit_and_wait

T = TypeVar("T")


def in_distributed_run() -> bool:
    """True inside a process that a launcher (torchrun, SLURM tasks) already placed in a process group."""
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
    # torch's elastic launcher: a second or more to import, and only for several devices
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
    # SLURM's stop signals (TERM, USR1, USR2) are for the training processes (they finish the step in flight,
    # checkpoint and stop), not for their launcher: ignored here, and ignored in them until they listen for them.
    # The launcher must not trade TERM for its own shutdown either (it would kill them before they save).
    ignore_stop_signals()
    os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGINT,SIGHUP,SIGQUIT"
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


def launch_stage(command: str, fn: Callable[..., T], executor: str | None, **options: Any) -> T | None:
    """Run the stage ``secvit <command> <options>``: as a SLURM job (``--executor slurm`` or
    ``$SECVIT_EXECUTOR``; waits for it and returns None), else ``fn(**options)`` here, once per
    visible device (:func:`per_device`). ``options`` holds ``profile`` and ``params``."""
    if executor_choice(executor) == "slurm":
        submit_and_wait(command, options)
        return None
    # the launcher names processes after the function: a partial carries fn's name
    return per_device(functools.update_wrapper(functools.partial(fn, **options), fn))
