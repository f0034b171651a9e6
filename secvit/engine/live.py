"""Curves in DVCLive's layout, rewritten from the whole run history each time.

Rewriting from the history stored with the checkpoints (instead of appending) keeps the
curves identical to the checkpoint after a kill and resume, with no duplicated steps.

The files are the ones DVCLive writes (``Live(dir, resume=False)`` with ``log_metric(name, value,
plot=True)`` per step), which ``dvc plots`` reads through dvc.yaml: ``plots/metrics/<name>.tsv``
(a ``step`` column and the value's column, named after the last part of ``name``) and
``metrics.json`` (the last value of each metric, nested by ``/``, and the last step). Written
here, not through DVCLive, whose import needs DVC itself: the stages then run where DVC is not
installed (a GPU node with its own Python, ``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import json
import shutil
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
    """One curve ``names[key]`` per row key, against ``row[step]``, in DVCLive's files under ``path``
    (replaced whole: DVC may have linked the old files to its cache)."""
    shutil.rmtree(path, ignore_errors=True)
    summary: dict[str, Any] = {}
    for key, name in names.items():
        points = [(int(row[step]), row[key]) for row in rows if row.get(key) is not None]
        if not points:
            continue
        file = path / "plots" / "metrics" / f"{name}.tsv"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("".join(f"{s}\t{v}\n" for s, v in [("step", name.rsplit("/", 1)[-1]), *points]))
        *groups, leaf = name.split("/")
        node = summary
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = points[-1][1]
    if summary:
        summary["step"] = max(int(row[step]) for row in rows)
        (path / "metrics.json").write_text(json.dumps(summary, indent=4) + "\n")


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Per-epoch pretraining curves."""
    write_curves(path, history, NAMES, "epoch")
