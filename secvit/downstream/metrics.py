"""What a finished dense run reports: COCO AP and ADE20K mIoU keyed as the tables read them, and the
curves mmengine logged (for DVCLive)."""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

__all__ = ["curve_rows", "detection_summary", "raw_metrics", "segmentation_summary"]


_COCO = {
    "ap_b": "coco/bbox_mAP", "ap50_b": "coco/bbox_mAP_50", "ap75_b": "coco/bbox_mAP_75",
    "ap_s_b": "coco/bbox_mAP_s", "ap_m_b": "coco/bbox_mAP_m", "ap_l_b": "coco/bbox_mAP_l",
    "ap_m": "coco/segm_mAP", "ap50_m": "coco/segm_mAP_50", "ap75_m": "coco/segm_mAP_75",
}
_ADE = {"miou": "mIoU", "macc": "mAcc", "aacc": "aAcc"}


def detection_summary(raw: dict[str, float]) -> dict[str, float | None]:
    """COCO AP in percent (pycocotools through mmdet's CocoMetric), keyed as the tables read them.

    pycocotools reports -1 where the split has no object of a size range: that is None (not measured).
    """
    return {ours: round(100 * float(raw[key]), 1) if raw[key] >= 0 else None for ours, key in _COCO.items() if key in raw}


def raw_metrics(raw: dict[str, Any]) -> dict[str, float]:
    """The evaluator's numbers as they came, as plain floats: mmseg's IoUMetric returns numpy float32,
    which is no Python ``float``, and mmdet's CocoMetric floats; anything else (strings) is left out."""
    return {key: float(value) for key, value in raw.items() if isinstance(value, numbers.Real)}


def segmentation_summary(raw: dict[str, float]) -> dict[str, float]:
    """mIoU, mAcc and aAcc in percent (mmseg's IoUMetric reports percent already)."""
    return {ours: round(float(raw[key]), 2) for ours, key in _ADE.items() if key in raw}


def curve_rows(work_dir: str | Path) -> list[dict[str, Any]]:
    """Logged scalars of every run in ``work_dir`` (mmengine's ``*/vis_data/scalars.json``).

    Runs resumed after a kill log again from their checkpoint: the last row of each
    (step, kind) wins, so resumed curves have no duplicated steps.
    """
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            kind = "train" if "loss" in row else "val"
            rows[(kind, int(row.get("step", 0)))] = row
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1]))]
