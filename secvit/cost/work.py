"""What each stage computes, in images and forward GFLOPs, before rates turn it into seconds (:mod:`.plan`).

One function per stage kind, each from the study's stage and the profile's settings: :func:`pretrain_work`,
:func:`evaluate_work`, :func:`complexity_work`, the data, tables and figures stages here, and the detection and
segmentation stages in :mod:`.dense`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from secvit.cost.flops import Flops
from secvit.cost.rates import Throughput
from secvit.data.config import DataConfig
from secvit.models.variants import ablation_options
from secvit.runs import RELEASED, parse_clusters
from secvit.study import Stage, Study

__all__ = ["Context", "RoIWork", "Work", "complexity_work", "evaluate_work", "figures_work", "no_work", "pretrain_work"]

#: One fvcore FLOP count costs a forward pass plus this many seconds of tracing every op in Python
#: (SecViT-T at 224 and 448 and SecViT-S at 224, EPYC host: 2.0-2.1 s; CPU-side, as on a GPU node).
FVCORE_TRACE_S = 2.0
#: Building one registered model on a CPU, weights initialised: 6.1 s for seven (SecViT-T to -L, SEC-Swin-T,
#: SEC-FasterViT-0, STViT-S; EPYC host). The figures stage builds its model.
MODEL_BUILD_S = 0.9
#: Drawing figure 4 (matplotlib: the cluster overlays, saved as PNG): 0.8 s (EPYC host).
RENDER_S = 0.8


@dataclass(frozen=True)
class RoIWork:
    """Forward GFLOPs per image of a two-stage detector's RoI heads, which run once per RoI, not per pixel."""

    train: float = 0.0  # every stage's box head on its sampled RoIs, mask head on the positive ones
    test: float = 0.0  # every stage's box head on the RPN's proposals, every mask head on the detections
    counted: float = 0.0  # as a FLOP count includes them (secvit.downstream.complexity.model_complexity)


@dataclass(frozen=True)
class Work:
    """A stage's work: ``trained`` images of ``gflops`` forward GFLOPs each, ``evaluated`` images of
    ``eval_gflops`` (default ``gflops``), the ``roi`` heads' work on each of them, ``extra_s`` device-seconds
    of other work (FLOP counts), ``checkpoint_bytes`` written, and ``startup_s`` on top of a process's start."""

    gflops: float = 0.0
    trained: int = 0
    evaluated: int = 0
    eval_gflops: float | None = None
    roi: RoIWork = field(default_factory=RoIWork)
    extra_s: float = 0.0
    checkpoint_bytes: float = 0.0
    startup_s: float = 0.0


@dataclass
class Context:
    """What the work functions read: the study, the profile, the device's rates and the FLOP counts."""

    study: Study
    profile: str
    rate: Throughput
    flops: Flops

    @functools.cached_property
    def data(self) -> DataConfig:
        return self.study.data(self.profile)

    def section(self, name: str) -> Any:
        return self.study.section(self.profile, name)


def no_work(stage: Stage, ctx: Context) -> Work:
    """Data and tables stages: no device work, a process's start-up (data generation and scans are small beside it)."""
    return Work()


def model_options(stage: Stage) -> dict[str, Any]:
    """The constructor options of a pretraining stage's run: its cluster setting (table 7) or ablation (table 6)."""
    clusters, ablation = stage.option("clusters"), stage.option("ablation")
    if clusters:
        return {"clusters": parse_clusters(clusters)}
    return ablation_options(ablation, stage.model)


def complexity_work(stage: Stage, ctx: Context) -> Work:
    """A FLOP count (fvcore traces one forward pass) of each model, sweep setting and ablation, and the
    inference throughput of each model at the profile's batch."""
    cx = ctx.section("complexity")
    study = ctx.study
    counted: list[tuple[str, dict[str, Any]]] = [(m, {}) for m in cx["models"]]
    counted += [(study.sweep.model, {"clusters": clusters}) for clusters in study.sweep.parsed()]
    counted += [(study.ablations.model, ablation_options(v, study.ablations.model)) for v in study.ablations.variants]
    seconds = 0.0
    for model, options in counted:
        g = ctx.flops(model, cx["img_size"], options)[0]
        timed = (cx["throughput_steps"] + cx["throughput_warmup"]) * cx["throughput_batch"] if not options and cx["throughput_steps"] else 0
        seconds += FVCORE_TRACE_S + (1 + timed) * g / ctx.rate.eval_rate(g)
    return Work(extra_s=seconds)


def pretrain_work(stage: Stage, ctx: Context) -> Work:
    """Every epoch of the training split at the recipe's size; the validation split after the epochs the recipe
    evaluates (raw and EMA weights); checkpoints: ``last.pth`` after each epoch and every
    ``checkpoint_every_steps`` inside one (weights, EMA, AdamW's two moments, float32), ``best.pth`` (weights)."""
    cfg = ctx.study.recipe(ctx.profile, stage.run)
    gflops, params = ctx.flops(stage.model, cfg.img_size, model_options(stage))
    train_n, val_n = ctx.data.images("imagenet", "train"), ctx.data.images("imagenet", "val")
    steps = train_n // cfg.batch_size
    evals = sum(1 for e in range(cfg.epochs) if (e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs)
    full = params * 4 * (2 + (1 if cfg.ema else 0) + 1)
    mid = (steps - 1) // cfg.checkpoint_every_steps if cfg.checkpoint_every_steps else 0
    return Work(gflops, cfg.epochs * steps * cfg.batch_size, evals * val_n * (2 if cfg.ema else 1),
                checkpoint_bytes=cfg.epochs * ((1 + mid) * full + params * 4))


def evaluate_work(stage: Stage, ctx: Context) -> Work:
    """The validation split once, at the shared recipe's size; twice for a released checkpoint (raw and EMA weights)."""
    gflops, _ = ctx.flops(stage.model, ctx.study.recipe(ctx.profile, None).img_size)
    return Work(gflops, evaluated=ctx.data.images("imagenet", "val") * (2 if stage.lane == RELEASED else 1))


def figures_work(stage: Stage, ctx: Context) -> Work:
    """Figure 4: its model built, one forward pass at 224 px on the CPU, the drawing."""
    g = ctx.flops(ctx.section("figures")["model"], 224)[0]
    return Work(startup_s=MODEL_BUILD_S + g / ctx.rate.eval_rate(g) + RENDER_S)
