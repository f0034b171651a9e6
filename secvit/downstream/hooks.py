"""mmengine hooks of the downstream stages, and their DDP wrapper for CPU processes."""

from __future__ import annotations

import functools

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import HOOKS, LOOPS, MODEL_WRAPPERS
from mmengine.runner import EpochBasedTrainLoop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from secvit.engine.distributed import Stopped, listen_for_stop, stop_requested

__all__ = ["CpuDistributedDataParallel", "FinalValidationHook", "ResumableEpochBasedTrainLoop", "RichProgressHook", "SafeResumeHook", "StopOnSignalHook", "resume_globals"]


def resume_globals() -> list:
    """What mmengine's resumable checkpoints hold besides tensors: its log history (``HistoryBuffer``,
    which pickles its statistics methods through ``getattr``) and numpy arrays, dtypes and scalars (their
    reconstructors taken from numpy's own pickling, not from its private modules)."""
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [HistoryBuffer, getattr, np.dtype, np.ndarray, np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0], *dtypes]


def load_own_checkpoint(filename: str, mmap: bool = False) -> dict:
    """A checkpoint that mmengine wrote in a work directory, loaded with :func:`resume_globals` allowed."""
    with torch.serialization.safe_globals(resume_globals()):
        return torch.load(filename, map_location="cpu", weights_only=True, mmap=mmap)


@HOOKS.register_module()
class SafeResumeHook(Hook):
    """Resume (or load ``load_from``) from the work directory's own checkpoint under torch's
    ``weights_only`` loading, with :func:`resume_globals` allowed for that one load only
    (``torch.serialization.safe_globals``). A finished run's checkpoint, which keeps no optimizer
    state (:func:`secvit.downstream.run.finish_checkpoints`), resumes its weights and position only.

    Nothing is allowed process-wide: every other ``torch.load`` (backbone weights, released files)
    keeps refusing pickles that build anything but tensors and plain containers.
    """

    priority = "VERY_HIGH"

    def before_run(self, runner) -> None:  # runs before Runner.load_or_resume
        resume, load_checkpoint = runner.resume, runner.load_checkpoint

        @functools.wraps(resume)
        def safe_resume(filename, *args, **kwargs):
            if "optimizer" not in load_own_checkpoint(filename, mmap=True):
                kwargs.update(resume_optimizer=False, resume_param_scheduler=False)
            with torch.serialization.safe_globals(resume_globals()):
                return resume(filename, *args, **kwargs)

        @functools.wraps(load_checkpoint)
        def safe_load(*args, **kwargs):
            with torch.serialization.safe_globals(resume_globals()):
                return load_checkpoint(*args, **kwargs)

        runner.resume, runner.load_checkpoint = safe_resume, safe_load


@HOOKS.register_module()
class RichProgressHook(Hook):
    """A rich progress bar over training iterations and over each evaluation (rank 0 only)."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}

    def _bar(self, runner, name: str, total: int, done: int = 0) -> None:
        if runner.rank != 0:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self.progress.start()
        if name in self.tasks:
            self.progress.reset(self.tasks[name], total=total, completed=done)
        else:
            self.tasks[name] = self.progress.add_task(name, total=total, completed=done)

    def _advance(self, name: str) -> None:
        if self.progress is not None and name in self.tasks:
            self.progress.advance(self.tasks[name])

    def before_train(self, runner) -> None:
        self._bar(runner, "train", runner.max_iters, runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._advance("train")

    def before_val_epoch(self, runner) -> None:
        self._bar(runner, "val", len(runner.val_dataloader))

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._advance("val")

    def before_test_epoch(self, runner) -> None:
        self._bar(runner, "test", len(runner.test_dataloader))

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._advance("test")

    def after_run(self, runner) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks = {}


class FinalValidationHook(Hook):
    """Keeps the metrics of the last validation in this process and the iteration it validated
    (:func:`secvit.downstream.run.run` takes them as the test's where the test is that validation)."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.metrics: dict[str, float] | None = None
        self.iteration = -1

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics, self.iteration = dict(metrics or {}), runner.iter


@MODEL_WRAPPERS.register_module()
class CpuDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU processes (gloo): the Runner passes ``device_ids`` of a GPU,
    which a CPU module must not get, and SyncBN (GPU only) becomes BN, as on one process."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        super().__init__(module=revert_sync_batchnorm(module), device_ids=None, **kwargs)


@HOOKS.register_module()
class StopOnSignalHook(Hook):
    """SLURM's pre-timeout signal (``SIGUSR2``, :func:`secvit.engine.distributed.stop_requested`): after the iteration in flight,
    save ``iter_<N>.pth`` in the work directory (weights, optimizer, schedulers, the position) and exit
    with :data:`~secvit.engine.distributed.STOP_EXIT_CODE`; the requeued job resumes from it (the latest checkpoint),
    so a requeue loses at most one iteration. Epoch-based runs resume inside the epoch through
    :class:`ResumableEpochBasedTrainLoop`."""

    priority = "LOWEST"  # after the schedulers stepped and the other hooks saw the iteration

    def before_train(self, runner) -> None:
        listen_for_stop()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        device = next(runner.model.parameters()).device
        if not stop_requested(device):  # every rank asks after every iteration: they stop together
            return
        name = f"iter_{runner.iter + 1}.pth"
        # by_epoch=False: the position is (the epoch in progress, the iterations done)
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False)
        message = f"epoch {runner.epoch + 1}, iteration {runner.iter + 1}"
        if runner.rank == 0:
            Console(stderr=True).log(f"stopped on request (SIGUSR2): saved {runner.work_dir}/{name} at {message}; run again to resume")
        raise Stopped(message)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's epoch loop, resumable inside an epoch: a checkpoint written mid-epoch
    (:class:`StopOnSignalHook`) holds the iterations done, so the resumed epoch passes over the
    batches already trained (loading them, as an uninterrupted run would, without training on them)."""

    def run_epoch(self) -> None:
        done = self._iter - self._epoch * len(self.dataloader)  # iterations of this epoch already trained
        if done <= 0:
            return super().run_epoch()
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        for idx, data_batch in enumerate(self.dataloader):
            if idx >= done:
                self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1
