"""COCO and ADE20K datasets, and COCO's metric, that leave out the images the data stage found bad.

:func:`leave_out` swaps a config's ``CocoDataset`` / ``ADE20KDataset`` (and ``CocoMetric``) for
subclasses that drop the given images when they list their data: a bad image is never loaded, so it
neither stops training nor crashes the metric, and evaluation counts each remaining image once
(``CocoMetric`` otherwise scores every image of its annotation file, a left-out one as all misses).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from secvit.errors import SecvitError

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
EVALUATORS = ("val_evaluator", "test_evaluator")
PREFIX = "LeaveOut"
_registered: set[str] = set()


def _subclass(base: type) -> type:
    class LeaveOut(base):
        def __init__(self, *args: Any, leave_out: Collection[str] = (), **kwargs: Any) -> None:
            self.leave_out = frozenset(os.path.abspath(p) for p in leave_out)
            super().__init__(*args, **kwargs)

        def load_data_list(self) -> list[dict]:
            return [d for d in super().load_data_list() if os.path.abspath(d["img_path"]) not in self.leave_out]

    LeaveOut.__name__ = LeaveOut.__qualname__ = PREFIX + base.__name__
    return LeaveOut


def _coco_metric(base: type) -> type:
    class LeaveOutCocoMetric(base):
        def __init__(self, *args: Any, leave_out: Collection[str] = (), **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            names = {os.path.basename(p) for p in leave_out}
            if self._coco_api is not None:  # scored images: those of the annotation file that were not left out
                self.img_ids = [i for i in self._coco_api.get_img_ids() if self._coco_api.imgs[i]["file_name"] not in names]

    return LeaveOutCocoMetric


def _register(scope: str) -> None:
    if scope in _registered:
        return
    if scope == "mmdet":
        # heavy and optional: only the toolbox of the config in use is imported
        from mmdet.datasets import CocoDataset
        from mmdet.evaluation import CocoMetric
        from mmdet.registry import DATASETS, METRICS

        DATASETS.register_module(module=_subclass(CocoDataset))
        METRICS.register_module(module=_coco_metric(CocoMetric))
    elif scope == "mmseg":
        # heavy and optional: only the toolbox of the config in use is imported
        from mmseg.datasets import ADE20KDataset
        from mmseg.registry import DATASETS

        DATASETS.register_module(module=_subclass(ADE20KDataset))
    _registered.add(scope)


def leave_out(cfg: Any, paths: Collection[str]) -> None:
    """Make every dataloader (and COCO evaluator) of ``cfg`` leave out the images at ``paths``."""
    if not paths:
        return
    paths = sorted(os.path.abspath(p) for p in paths)
    _register(cfg.get("default_scope", "mmdet"))
    for name in DATALOADERS:
        dataset = cfg[name]["dataset"]
        if dataset["type"] not in ("CocoDataset", "ADE20KDataset"):
            raise SecvitError(f"{name} reads a {dataset['type']}; bad images can be left out of CocoDataset and ADE20KDataset only")
        dataset["type"], dataset["leave_out"] = PREFIX + dataset["type"], paths
    for name in EVALUATORS:
        for evaluator in cfg[name] if isinstance(cfg[name], list) else [cfg[name]]:
            if evaluator["type"] == "CocoMetric":
                evaluator["type"], evaluator["leave_out"] = PREFIX + "CocoMetric", paths
