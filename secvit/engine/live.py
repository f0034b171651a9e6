"""Curves through DVCLive, rewritten from the whole run history each time.

Rewriting from the history stored with the checkpoints (instead of appending) keeps the
curves identical to the checkpoint after a kill and resume, with no duplicated steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

NAMES = {
    "lr": "train/lr",
    "train_loss": "train/loss",
    "images_per_s": "train/images_per_s",
    "raw_top1": "val/top1",
    "raw_top5": "val/top5",
    "ema_top1": "val/top1_ema",
    "ema_top5": "val/top5_ema",
}


def write_curves(path: Path, rows: list[dict[str, Any]], names: Mapping[str, str], step: str) -> None:
    """One DVCLive metric ``names[key]`` per row key, against ``row[step]``."""
    from dvclive import Live

    with Live(dir=str(path), resume=False, dvcyaml=None, save_dvc_exp=False, report=None, monitor_system=False) as live:
        for row in rows:
            live.step = int(row[step])
            for key, name in names.items():
                if row.get(key) is not None:
                    live.log_metric(name, row[key], plot=True)


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Per-epoch pretraining curves."""
    write_curves(path, history, NAMES, "epoch")
