"""mmengine hooks of the downstream stages, and their DDP wrapper for CPU processes."""

from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import HOOKS, MODEL_WRAPPERS
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["CpuDistributedDataParallel", "RichProgressHook"]


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


@MODEL_WRAPPERS.register_module()
class CpuDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU processes (gloo): the Runner passes ``device_ids`` of a GPU,
    which a CPU module must not get, and SyncBN (GPU only) becomes BN, as on one process."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        super().__init__(module=revert_sync_batchnorm(module), device_ids=None, **kwargs)
