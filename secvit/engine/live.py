"""Per-epoch curves through DVCLive, rewritten from the run history after every epoch.

Rewriting from the history stored in the checkpoint (instead of appending) keeps the
curves identical to the checkpoint after a kill and resume, with no duplicated steps.
"""

from __future__ import annotations

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


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    from dvclive import Live

    with Live(dir=str(path), resume=False, dvcyaml=None, save_dvc_exp=False, report=None, monitor_system=False) as live:
        for row in history:
            live.step = row["epoch"]
            for key, name in NAMES.items():
                if row.get(key) is not None:
                    live.log_metric(name, row[key], plot=True)
