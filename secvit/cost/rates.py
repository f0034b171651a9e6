"""The rates of a device: forward GFLOPs per second of training and evaluation, and a stage process's fixed
costs (start-up, checkpoint writes). Measured on the user's device by ``secvit bench train``
(:mod:`secvit.bench.train`), or a documented default for A100 and H100 (:func:`gpu_default`)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError
from secvit.tables.paper import load_paper_tables

__all__ = ["THROUGHPUT_FILE", "Throughput", "gpu_default", "load_throughput", "save_throughput", "table2_inference_rate"]

#: Where ``secvit bench train`` writes its measurement and ``secvit plan`` looks for one.
THROUGHPUT_FILE = Path("runs/bench/throughput.json")

# ---- default GPU rates, derived from the paper's table 2 (A100, batch 64, inference)

#: Training work relative to inference per image: a forward pass and a backward pass of about
#: twice its cost (the usual 1:2 rule), so an image trains at a third of its inference rate.
TRAIN_FACTOR = 3.0
#: H100 (SXM, bf16) over A100 for these models' training: peak dense bf16 is 3.2x, but ViT-sized
#: models at batch 128 per GPU are partly memory-bound; 2x is the assumption (measure with
#: ``secvit bench train`` on the GPU for a real figure).
H100_OVER_A100 = 2.0
#: Seconds from a stage's start to its first step on a GPU node (imports, CUDA and NCCL start,
#: scanning ImageNet's 1.28M files, data-loader workers): an assumption, not a measurement.
GPU_STARTUP_S = 120.0
#: Checkpoint write rate on a cluster's shared file system (GB/s): an assumption.
GPU_CHECKPOINT_GB_S = 1.0


@dataclass(frozen=True)
class Throughput:
    """Per-device rates in forward GFLOPs per second, and the fixed costs of a stage process."""

    device: str  # what it describes
    source: str  # how the figures were obtained
    train_gflops_per_s: float  # images trained per second x GFLOPs of one image's forward pass
    eval_gflops_per_s: float  # images evaluated per second x GFLOPs of one image's forward pass
    startup_s: float  # a stage process's start: imports, model build, data checks
    checkpoint_gb_per_s: float  # writing checkpoints
    measured: dict[str, Any] = field(default_factory=dict)  # the raw measurement, if any
    #: (GFLOPs of one image, evaluation GFLOPs/s) measured at several image sizes: a CPU runs small
    #: images far below its large-image rate (per-step overheads); empty: one rate for every size
    eval_curve: list[list[float]] = field(default_factory=list)
    dense_startup_s: float = 0.0  # what a detection or segmentation process adds: mmdet, mmseg, mmengine
    #: a two-stage detector's RoI heads (convolutions on batches of RoIs, far from a backbone's rate on a CPU),
    #: training and evaluation GFLOPs/s; 0: the rates above at the work per image
    roi_train_gflops_per_s: float = 0.0
    roi_eval_gflops_per_s: float = 0.0

    def eval_rate(self, gflops: float) -> float:
        """Evaluation GFLOPs/s for images of ``gflops`` each: the measured curve, interpolated
        log-log between its points and held beyond them; without a curve the one rate."""
        points = sorted(self.eval_curve)
        if len(points) < 2 or gflops <= 0:
            return self.eval_gflops_per_s
        if gflops <= points[0][0]:
            return points[0][1]
        for (g0, r0), (g1, r1) in zip(points, points[1:]):
            if gflops <= g1:
                t = math.log(gflops / g0) / math.log(g1 / g0) if g1 > g0 else 1.0
                return math.exp(math.log(r0) + t * math.log(r1 / r0))
        return points[-1][1]

    def train_rate(self, gflops: float) -> float:
        """Training GFLOPs/s for images of ``gflops`` each: the measured training rate, scaled
        with image size as evaluation scales (training was measured at the recipe's size only)."""
        return self.train_gflops_per_s * self.eval_rate(gflops) / self.eval_rate(self.measured.get("gflops_per_image", 0.0))

    def roi_train_rate(self, gflops: float) -> float:
        """Training GFLOPs/s of RoI heads doing ``gflops`` per image: measured, else :meth:`train_rate`."""
        return self.roi_train_gflops_per_s or self.train_rate(gflops)

    def roi_eval_rate(self, gflops: float) -> float:
        """Evaluation GFLOPs/s of RoI heads doing ``gflops`` per image: measured, else :meth:`eval_rate`."""
        return self.roi_eval_gflops_per_s or self.eval_rate(gflops)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Throughput:
        try:
            return cls(**data)
        except TypeError as e:
            raise SecvitError(f"{where} is not a throughput file of `secvit bench train` ({e}); measure again") from None

    @property
    def gpu(self) -> bool:
        """Whether these are a GPU's rates (the defaults, or measured on CUDA)."""
        return not self.measured or str(self.measured.get("device", "")).startswith("cuda")


def table2_inference_rate() -> tuple[float, list[str]]:
    """The A100 inference rate in GFLOPs/s implied by the paper's table 2: the mean over its SEC
    rows of throughput (images/s, A100, batch 64) x GFLOPs (paper convention); and those rows."""
    rates, rows = [], []
    for _, row in load_paper_tables()["table2"].iter_rows():
        if row.get("ours") and row.get("throughput") and row.get("gflops"):
            rates.append(row["throughput"] * row["gflops"])
            rows.append(f"{row['model']} {row['throughput']} img/s x {row['gflops']} GFLOPs")
    return sum(rates) / len(rates), rows


def gpu_default(name: str) -> Throughput:
    """The documented default rates of an ``a100`` or ``h100`` (see the module's constants)."""
    infer, rows = table2_inference_rate()
    if name == "a100":
        factor, device = 1.0, "NVIDIA A100 (default)"
        how = f"paper table 2 (A100, batch 64): mean of {'; '.join(rows)} = {infer:.0f} GFLOPs/s inference"
    elif name == "h100":
        factor, device = H100_OVER_A100, "NVIDIA H100 (default)"
        how = f"the A100 default ({infer:.0f} GFLOPs/s inference, paper table 2) x {H100_OVER_A100:g} (assumed H100/A100)"
    else:
        raise SecvitError(f"unknown device {name!r}; choose a100, h100 or a file written by `secvit bench train`")
    return Throughput(
        device, f"{how}; training = inference / {TRAIN_FACTOR:g} (forward + backward); start-up {GPU_STARTUP_S:g} s "
        f"and checkpoints at {GPU_CHECKPOINT_GB_S:g} GB/s assumed",
        infer * factor / TRAIN_FACTOR, infer * factor, GPU_STARTUP_S, GPU_CHECKPOINT_GB_S,
    )


def load_throughput(choice: str | None, root: Path = Path(".")) -> Throughput:
    """``a100``/``h100`` (defaults), a file of ``secvit bench train``, or (None) the measured file
    ``runs/bench/throughput.json`` if there is one, else the A100 default."""
    if choice in ("a100", "h100"):
        return gpu_default(choice)
    path = Path(choice) if choice else root / THROUGHPUT_FILE
    if choice is None and not path.is_file():
        return gpu_default("a100")
    if not path.is_file():
        raise SecvitError(f"no throughput file {path}; give a100, h100, or run `secvit bench train` first")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise SecvitError(f"{path} is not JSON; run `secvit bench train` again") from None
    return Throughput.from_dict(data, str(path))


def save_throughput(rate: Throughput, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rate.to_dict(), indent=1))
    return path
