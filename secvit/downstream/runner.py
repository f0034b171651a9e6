"""Run a prepared OpenMMLab config (:mod:`secvit.downstream.config`) with mmengine's Runner: train (resuming
from the work directory), test, and keep the work directory's checkpoints as a finished run needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from secvit.checkpoint import atomic_save
from secvit.errors import SecvitError

__all__ = ["finish_checkpoints", "latest_checkpoint", "train_and_test"]


def _checkpoints(work_dir: str | Path) -> list[tuple[str, int, str]]:
    """``(kind, number, path)`` of the work dir's ``epoch_N.pth`` / ``iter_N.pth`` checkpoints."""
    found = []
    for path in Path(work_dir).glob("*.pth"):
        kind, _, number = path.stem.partition("_")
        if kind in ("epoch", "iter") and number.isdigit():
            found.append((kind, int(number), str(path)))
    return found


def latest_checkpoint(work_dir: str | Path) -> str | None:
    """The work dir's checkpoint of the furthest epoch or iteration (``epoch_N.pth`` / ``iter_N.pth``).

    Checkpoints are renamed into place whole, so any of them is complete; mmengine's own pointer file
    (``last_checkpoint``) is written after the checkpoint and would miss one a kill fell between.
    """
    found = _checkpoints(work_dir)
    if len({kind for kind, _, _ in found}) > 1:  # an epoch-based run stopped mid-epoch: compare iterations done
        from secvit.downstream.hooks import load_own_checkpoint  # mmengine: heavy, needed only here

        found = [("iter", load_own_checkpoint(path, mmap=True)["meta"]["iter"], path) for _, _, path in found]
    return max(found)[2] if found else None


def finish_checkpoints(work_dir: str | Path) -> None:
    """After a finished run (trained and tested), its work directory keeps one checkpoint, the latest,
    with the weights and position only: resuming needs no optimizer or scheduler state once nothing is
    left to train (AdamW's two moments are two thirds of a checkpoint), and no earlier checkpoint."""
    from secvit.downstream.hooks import load_own_checkpoint  # mmengine: heavy, needed only here

    latest = latest_checkpoint(work_dir)
    if latest is None:
        return
    checkpoint = load_own_checkpoint(latest)
    if "optimizer" in checkpoint or "param_schedulers" in checkpoint:
        checkpoint.pop("optimizer", None)
        checkpoint.pop("param_schedulers", None)
        atomic_save(checkpoint, latest)
    for _, _, path in _checkpoints(work_dir):
        if path != latest:
            Path(path).unlink()


def _test_is_validation(cfg: Any) -> bool:
    """Whether the config tests on its validation split with its validation metric (COCO val2017, ADE20K validation)."""
    return cfg.get("test_dataloader") == cfg.get("val_dataloader") and cfg.get("test_evaluator") == cfg.get("val_evaluator")


def train_and_test(cfg: Any) -> dict[str, float]:
    """Train ``cfg`` (resuming from its work dir), then test the final model; the test metrics.

    mmengine's train loops validate after the last epoch or iteration. Where the test is that validation
    (same split, same metric), its metrics are the test's, and the model is not evaluated twice; a run
    resumed after its training ended tests again.
    """
    from mmengine.runner import Runner  # heavy (mmengine, and mmdet or mmseg through the config): loaded to run

    import secvit.downstream.backbone  # noqa: F401  (registers the backbone, hooks and file backend)
    from secvit.downstream.hooks import FinalValidationHook

    _require_compiled_ops()
    if cfg.launcher == "pytorch" and not torch.cuda.is_available():
        if not dist.is_initialized():  # mmengine's init_dist selects a GPU first; it skips a joined group
            dist.init_process_group("gloo")
    runner = Runner.from_cfg(cfg)
    final = FinalValidationHook()
    runner.register_hook(final)
    runner.train()
    if final.metrics is not None and final.iteration == runner.iter and _test_is_validation(cfg):
        return final.metrics
    return dict(runner.test())


def _require_compiled_ops() -> None:
    try:
        from mmcv.ops import nms  # noqa: F401
    except (ImportError, OSError) as e:
        raise SecvitError(
            f"mmcv has no compiled ops ({str(e).splitlines()[0][:80]}); rebuild it with scripts/build_mmcv.sh "
            "(MMCV_WITH_OPS=1) and reinstall the environment with scripts/env.sh"
        ) from None
