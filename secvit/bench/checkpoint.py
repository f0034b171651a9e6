"""``python -m secvit.bench.checkpoint``: the size and write time of the biggest checkpoint of each stage kind of the
paper profile, written as the stages write theirs (:func:`secvit.checkpoint.atomic_save`, beside the run directories).

What a stop signal costs besides the step in flight: a checkpoint's write must fit between SLURM's warning and
its kill (``signal_delay_s``; GraceTime and KillWait for preemption and ``scancel``; slurm/README.md). Pretraining
writes weights, their EMA and AdamW's two moments; detection and segmentation weights and the two moments (float32).
Prints one line per kind; the bytes go into :data:`secvit.study.slurm.CHECKPOINT_BYTES`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from secvit.checkpoint import atomic_save
from secvit.cost.flops import Flops, dense_params
from secvit.models.registry import create
from secvit.study import load_study

COPIES = {"pretrain": 4, "detect": 3, "segment": 3}  # float32 copies of the parameters in one checkpoint


def model_params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create(name).parameters())


def biggest(params: Path = Path("params.yaml")) -> dict[str, tuple[str, float]]:
    """The biggest job of each kind that checkpoints: (stage name, parameters)."""
    study = load_study(params)
    found: dict[str, tuple[str, float]] = {}
    flops = Flops()  # cached in runs/bench/flops.json: counting the big models takes minutes once
    for stage in study.of("paper"):
        if stage.kind == "pretrain":
            count = float(model_params(stage.model))
        elif stage.kind in ("detect", "segment"):
            setting = {k: v for k, v in stage.options if k in ("detector", "schedule", "head")}
            count = dense_params(stage.tables[0], setting, stage.model, flops)
        else:
            continue
        if count > found.get(stage.kind, ("", 0.0))[1]:
            found[stage.kind] = (stage.name, count)
    return found


def write_seconds(params: float, copies: int, folder: Path, repeats: int = 3) -> tuple[int, float]:
    """Bytes and the median seconds of writing ``copies`` float32 copies of ``params`` parameters (64 tensors each)."""
    chunk = int(params) // 64 + 1
    state = {f"copy{c}": [torch.randn(chunk) for _ in range(64)] for c in range(copies)}
    times = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "last.pth"
        for _ in range(repeats):
            start = time.perf_counter()
            atomic_save(state, path)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
    return size, sorted(times)[len(times) // 2]


def main() -> None:
    folder = Path("runs")
    folder.mkdir(exist_ok=True)
    for kind, (stage, count) in biggest().items():
        size, seconds = write_seconds(count, COPIES[kind], folder)
        print(f"{kind:9} {stage:48} {count / 1e6:7.1f} M params  {size / 1e9:6.2f} GB  {seconds:6.2f} s  {size / 1e9 / seconds:6.2f} GB/s")


if __name__ == "__main__":
    main()
