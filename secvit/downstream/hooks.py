"""mmengine hooks of the downstream stages, and their DDP wrapper for CPU processes."""

from __future__ import annotations

import functools
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import HOOKS, LOOPS, MODEL_WRAPPERS
from mmengine.runner import EpochBasedTrainLoop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from secvit.engine.distributed import Stopped, listen_for_stop, stop_requested, stop_signal_name

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


def _tuples(value):
    """Python's random state as ``random.setstate`` takes it (a checkpoint may give its tuples back as lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@HOOKS.register_module()
class StopOnSignalHook(Hook):
    """SLURM's stop signals (``SIGTERM``, ``SIGUSR1``, ``SIGUSR2``: :func:`secvit.engine.distributed.stop_requested`): after the iteration in flight,
    save ``iter_<N>.pth`` in the work directory (weights, optimizer, schedulers, the position) and exit
    with :data:`~secvit.engine.distributed.STOP_EXIT_CODE`; the requeued job resumes from it (the latest checkpoint),
    so a requeue loses at most one iteration. Epoch-based runs resume inside the epoch through
    :class:`ResumableEpochBasedTrainLoop`."""

    priority = "LOWEST"  # after the schedulers stepped and the other hooks saw the iteration

    def __init__(self) -> None:
        self._saving = False
        self._rng: dict | None = None

    def before_train(self, runner) -> None:
        listen_for_stop()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """The checkpoint written on a stop keeps this process's random states (torch: stochastic depth, samplers;
        numpy and Python: the data pipelines in the main process), so that the resumed run goes on with the states
        the uninterrupted one would have: :class:`ResumableEpochBasedTrainLoop` restores them all once it has
        skipped the batches already trained (drawing them again consumes the data's random numbers);
        an iteration-based loop, whose skip redraws the only pass there is, gets torch's back at its first
        iteration (:meth:`before_train_iter`)."""
        if self._saving:
            meta = checkpoint.setdefault("meta", {})
            meta["torch_rng"] = torch.get_rng_state()
            name, keys, pos, has_gauss, gauss = np.random.get_state()
            meta["numpy_rng"] = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
            meta["python_rng"] = random.getstate()
            if torch.cuda.is_available():
                meta["cuda_rng"] = torch.cuda.get_rng_state_all()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get("meta") or {}
        self._rng = {k: meta[k] for k in ("torch_rng", "cuda_rng", "numpy_rng", "python_rng") if k in meta} or None

    def restore_rng(self, data: bool = True) -> None:
        """Once after a resume from a stop: torch's random states, and (``data``) numpy's and Python's."""
        if self._rng is None:
            return
        rng, self._rng = self._rng, None
        torch.set_rng_state(rng["torch_rng"])
        if "cuda_rng" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda_rng"])
        if data and "numpy_rng" in rng:
            name, keys, pos, has_gauss, gauss = rng["numpy_rng"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        if data and "python_rng" in rng:
            random.setstate(_tuples(rng["python_rng"]))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.restore_rng(data=False)  # an iteration-based loop (the epoch loop restored them all before)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        device = next(runner.model.parameters()).device
        if not stop_requested(device):  # every rank asks after every iteration: they stop together
            return
        name = f"iter_{runner.iter + 1}.pth"
        # by_epoch=False: the position is (the epoch in progress, the iterations done)
        self._saving = True
        runner.save_checkpoint(runner.work_dir, name, by_epoch=False)
        message = f"epoch {runner.epoch + 1}, iteration {runner.iter + 1}"
        if runner.rank == 0:
            Console(stderr=True).log(f"stopped on request ({stop_signal_name()}): saved {runner.work_dir}/{name} at {message}; run again to resume")
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
        batches = iter(self.dataloader)
        for _ in range(min(done, len(self.dataloader))):
            next(batches)
        for hook in self.runner.hooks:  # the random states of the stop, before the next batch is drawn
            if isinstance(hook, StopOnSignalHook):
                hook.restore_rng()
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1
