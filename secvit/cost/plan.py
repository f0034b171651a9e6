"""The study's cost before anything runs: ``secvit plan``.

For every stage of a profile (the study model's, :mod:`secvit.study`) the plan estimates the work in forward
GFLOPs, the device-hours it needs and its wall time under its SLURM settings (or on this machine's devices),
then totals them, per paper table and for the peers. It costs the lanes that run (``--lane``: ``released``, the
authors' checkpoints evaluated here and the dense tables from them; ``ours``; both), and says how soon each lane
gives its first trustworthy number: the shortest chain of stages, run one after another, to an ImageNet evaluation.

The model, per stage process::

    wall  = startup + (train + eval + counts) / devices + checkpoints
    train = trained images x GFLOPs(image) / train rate(GFLOPs(image))    (one forward + backward + step each)
    eval  = evaluated images x GFLOPs(image) / eval rate(GFLOPs(image))   (forward only)
    counts = the stage's fvcore FLOP counts (complexity, and each dense stage's whole model)
    device-hours = devices x wall / 3600

What each stage computes is :mod:`.work` (and :mod:`.dense` for detection and segmentation), the FLOPs
:mod:`.flops`, the rates of the device :mod:`.rates`: measured by ``secvit bench train``, or a documented
default for A100 and H100. A rate depends on the work per image where it was measured at several sizes (a CPU
runs 32-pixel images far below its 224-pixel rate); GPU defaults are one rate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from secvit.cost.dense import COCO_OBJECTS_PER_IMAGE, DENSE_RUNNER_S, DETECTION_SCALE, DETECTION_SIZE, POSITIVES_PER_OBJECT
from secvit.cost.dense import SEGMENTATION_CROP, SEGMENTATION_SCALE, dense_work
from secvit.cost.flops import FLOPS_CACHE, Flops
from secvit.cost.rates import Throughput, load_throughput
from secvit.cost.references import CONVENTION, GPU_RATIO_SOURCE, UNCHECKED, V100_PER_A100, compare
from secvit.cost.work import (
    FVCORE_TRACE_S,
    MODEL_BUILD_S,
    RENDER_S,
    Context,
    Work,
    complexity_work,
    evaluate_work,
    figures_work,
    no_work,
    pretrain_work,
)
from secvit.device import profile_device, visible_devices
from secvit.errors import SecvitError
from secvit.params import check_profile
from secvit.runs import LANES
from secvit.study import Stage, Study, check_lanes, load_study
from secvit.study.slurm import cluster_partitions, kind_settings

__all__ = ["Plan", "StageCost", "plan", "render"]

#: Each stage kind's work.
WORK: dict[str, Callable[[Stage, Context], Work]] = {
    "data": no_work, "complexity": complexity_work, "pretrain": pretrain_work, "evaluate": evaluate_work,
    "detect": dense_work, "segment": dense_work, "tables": no_work, "figures": figures_work,
}


@dataclass(frozen=True)
class Devices:
    """What a stage runs on: how many devices, of which kind, under which SLURM time limit (None: local)."""

    count: int
    kind: str  # GPU, CPU
    timeout_min: int | None


def devices_of(stage: Stage, study: Study, executor: str, gpu: bool) -> Devices:
    """The devices of ``stage``: its job's SLURM settings (as the SLURM executor submits it), or this machine's."""
    if executor != "slurm":
        return Devices(visible_devices(), "GPU" if gpu else "CPU", None)
    cfg = study.slurm.for_stage(stage)
    if cfg.gpus_per_node:
        return Devices(cfg.nodes * cfg.gpus_per_node, "GPU", cfg.timeout_min)
    return Devices(cfg.nodes * cfg.ntasks_per_node(), "GPU" if gpu else "CPU", cfg.timeout_min)


@dataclass
class StageCost:
    """One stage's estimate: its work (images, GFLOPs), the devices it runs on and the time that takes."""

    stage: str
    kind: str  # data, complexity, pretrain, evaluate, detect, segment, tables, figures
    tables: list[str]  # the paper tables that show its results (table1..table8)
    peer: bool  # a run of a peer family (STViT, PaCa-ViT): no paper table prints it
    upstream: list[str]  # stages it needs
    gflops_per_image: float
    train_images: int  # images trained (all epochs / iterations, all devices)
    eval_images: int  # images evaluated
    devices: int
    device_kind: str  # GPU, CPU
    startup_s: float
    compute_s: float  # device-seconds of training and evaluation
    checkpoint_s: float
    timeout_min: int | None  # the SLURM time limit (None: local)
    lane: str | None = None  # ours, released; None: shared by both lanes

    @property
    def wall_s(self) -> float:
        return self.startup_s + self.compute_s / self.devices + self.checkpoint_s

    @property
    def device_hours(self) -> float:
        return self.devices * self.wall_s / 3600 if self.compute_s else 0.0

    @property
    def jobs(self) -> int:
        """SLURM jobs the stage takes (one per time limit; each requeue resumes)."""
        return max(1, math.ceil(self.wall_s / 60 / self.timeout_min)) if self.timeout_min else 1

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "wall_s": self.wall_s, "device_hours": self.device_hours, "jobs": self.jobs}


@dataclass
class Plan:
    profile: str
    throughput: Throughput
    executor: str
    stages: list[StageCost]  # the stages that would run
    skipped_peers: list[StageCost]  # peer stages left out by `peers.<profile>: false`
    assumptions: list[str]
    lanes: tuple[str, ...] = LANES  # the lanes costed
    first: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)  # lane -> (evaluation, hours to it)
    slurm: list[tuple[str, str, str | None]] = dataclasses.field(default_factory=list)  # per kind: settings, problem

    def total(self, stages: Iterable[StageCost] | None = None) -> tuple[float, float]:
        """(device-hours, wall hours if run one after another) of ``stages`` (default: all that would run)."""
        chosen = list(self.stages if stages is None else stages)
        return sum(s.device_hours for s in chosen), sum(s.wall_s for s in chosen) / 3600

    def closure(self, names: Iterable[str]) -> list[StageCost]:
        """The stages ``names`` and everything upstream of them (what ``dvc repro`` of them runs)."""
        by_name = {s.stage: s for s in self.stages + self.skipped_peers}
        todo, seen = list(names), {}
        while todo:
            name = todo.pop()
            if name in seen or name not in by_name:
                continue
            seen[name] = by_name[name]
            todo.extend(by_name[name].upstream)
        return list(seen.values())

    def per_table(self) -> dict[str, tuple[float, float]]:
        """Device-hours of each table's own stages, and with everything they need upstream; the peers' apart."""
        every = self.stages + self.skipped_peers
        groups = {t: [s for s in every if t in s.tables and not s.peer] for t in sorted({t for s in every for t in s.tables})}
        groups["peers"] = [s for s in every if s.peer]
        return {t: (self.total(own)[0], self.total(self.closure(s.stage for s in own))[0]) for t, own in groups.items() if own}

    def to_dict(self) -> dict[str, Any]:
        device_hours, serial_h = self.total()
        peers = [s for s in self.stages if s.peer]
        return {
            "profile": self.profile,
            "executor": self.executor,
            "throughput": self.throughput.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "skipped_peers": [s.to_dict() for s in self.skipped_peers],
            "lanes": list(self.lanes),
            "first_number": {lane: {"stage": name, "wall_hours": h} for lane, (name, h) in self.first.items()},
            "total_device_hours": device_hours,
            "total_serial_wall_hours": serial_h,
            "peers_device_hours": self.total(peers or self.skipped_peers)[0],
            "tables": {t: {"own_device_hours": own, "with_upstream_device_hours": up} for t, (own, up) in self.per_table().items()},
            "assumptions": self.assumptions,
            "published": [{"stage": c.stage, "reference": c.reference.model, "source": c.reference.source, "ratio": c.ratio}
                          for c in compare(self)],
            "slurm": [{"kind": k, "settings": d, "problem": p} for k, d, p in self.slurm],
        }


def stage_cost(stage: Stage, work: Work, rate: Throughput, devices: Devices) -> StageCost:
    """The seconds of ``work`` at ``rate`` on ``devices``: its images at the training and evaluation rates of
    their GFLOPs, the RoI heads' work at theirs, the checkpoints at the write rate. A stage without device
    work runs on one CPU."""
    eval_gflops = work.gflops if work.eval_gflops is None else work.eval_gflops
    compute = work.extra_s
    if work.trained:
        compute += work.trained * work.gflops / rate.train_rate(work.gflops)
        compute += work.trained * work.roi.train / rate.roi_train_rate(work.roi.train) if work.roi.train else 0.0
    if work.evaluated:
        compute += work.evaluated * eval_gflops / rate.eval_rate(eval_gflops)
        compute += work.evaluated * work.roi.test / rate.roi_eval_rate(work.roi.test) if work.roi.test else 0.0
    return StageCost(
        stage.name, stage.kind, list(stage.tables), stage.peer, list(stage.upstream), work.gflops + work.roi.train, work.trained,
        work.evaluated, devices.count if compute else 1, devices.kind if compute else "CPU", rate.startup_s + work.startup_s,
        compute, work.checkpoint_bytes / 1e9 / rate.checkpoint_gb_per_s, devices.timeout_min, stage.lane,
    )


def plan(profile: str, params_path: Path = Path("params.yaml"), throughput: Throughput | None = None, executor: str = "local",
         flops: Flops | None = None, only: Sequence[str] | None = None, study: Study | None = None,
         lanes: Sequence[str] | None = None) -> Plan:
    """The estimate of every stage of ``profile`` (``only``: of the stages matching these shell patterns) in
    ``lanes`` (default params.yaml ``released.lanes``)."""
    check_profile(profile)
    if executor not in ("local", "slurm"):
        raise SecvitError(f"unknown executor {executor!r}; choose local or slurm")
    study = study or load_study(params_path)
    run = check_lanes(lanes) if lanes else study.lanes.get(profile, LANES)  # before the FLOP counts: minutes
    rate = throughput or load_throughput(None, params_path.parent)
    flops = flops or Flops(params_path.parent / FLOPS_CACHE)
    ctx = Context(study, profile, rate, flops)
    stages = [s for s in study.of(profile) if only is None or any(fnmatchcase(s.name, pattern) for pattern in only)]
    costs = [stage_cost(s, WORK[s.kind](s, ctx), rate, devices_of(s, study, executor, rate.gpu)) for s in stages]
    flops.save()
    left_out = study.left_out(profile, run)
    peers = study.left_out(profile, LANES)  # what `peers.<profile>: false` leaves out, in either lane
    kept = [dataclasses.replace(c, upstream=[u for u in c.upstream if u not in left_out]) for c in costs if c.stage not in left_out]
    skipped = [c for c in costs if c.stage in peers and c.lane in (None, *run)]
    slurm = []
    if executor == "slurm":  # the settings the SLURM executor submits with, and what it would refuse
        gpu = profile_device(params_path, profile) == "cuda"
        slurm = [(k, c.describe(), problem) for k, c, problem in kind_settings(study, profile, gpu, cluster_partitions(), rate.checkpoint_gb_per_s)]
    return Plan(profile, rate, executor, kept, skipped, assumptions(rate, executor, profile, study), run, first_numbers(costs, run), slurm)


def first_numbers(costs: Sequence[StageCost], lanes: Sequence[str]) -> dict[str, tuple[str, float]]:
    """Each lane's first trustworthy number: the ImageNet evaluation reached soonest, and the hours to it (its
    stages and their upstream, each chain run one after another; chains side by side)."""
    by_name = {c.stage: c for c in costs}
    done: dict[str, float] = {}

    def finish(name: str) -> float:  # the wall seconds until stage `name` has run
        if name not in done:
            stage = by_name[name]
            done[name] = stage.wall_s + max((finish(u) for u in stage.upstream if u in by_name), default=0.0)
        return done[name]

    found = {}
    for lane in lanes:
        evaluations = [c.stage for c in costs if c.kind == "evaluate" and c.lane == lane and not c.peer]
        if evaluations:
            best = min(evaluations, key=finish)
            found[lane] = (best, finish(best) / 3600)
    return found


def assumptions(rate: Throughput, executor: str, profile: str, study: Study) -> list[str]:
    """What the plan assumes, in words (printed under it)."""
    found = [
        f"rates: {rate.device}: training {rate.train_gflops_per_s:,.0f} GFLOPs/s, evaluation {rate.eval_gflops_per_s:,.0f} GFLOPs/s per device "
        f"({rate.source})",
        f"per stage: {rate.startup_s:.0f} s start-up ({rate.startup_s + rate.dense_startup_s + DENSE_RUNNER_S:.0f} s for detection and "
        f"segmentation: their imports and {DENSE_RUNNER_S:g} s of config and runner building); checkpoints (weights, EMA, AdamW moments, "
        f"float32) at {rate.checkpoint_gb_per_s:.2g} GB/s",
        "GFLOPs: fvcore count of one image's forward pass, all ops (secvit.complexity); training an image costs its forward GFLOPs at the training rate"
        + ("; rates follow the image's GFLOPs along the measured curve (small images run below a CPU's rate)" if rate.eval_curve else ""),
        "detection/segmentation: the paper's printed whole-model GFLOPs (tables 3-5) where printed, else backbone scaled from 224x224 plus the "
        f"setting's head share of SecViT-S, at its reference size (detectors {DETECTION_SIZE[1]}x{DETECTION_SIZE[0]}), per pixel of the images "
        f"as the recipe resizes them (into {DETECTION_SCALE[0]}x{DETECTION_SCALE[1]} / {SEGMENTATION_SCALE[0]}x{SEGMENTATION_SCALE[1]}, real "
        f"images 4:3, the profile's image_scale) and of {SEGMENTATION_CROP}x{SEGMENTATION_CROP} training crops; iteration schedules keep the "
        "global batch on any device count; each dense stage and the complexity stage count FLOPs with fvcore "
        f"(a forward pass plus {FVCORE_TRACE_S:g} s of tracing)",
        "two-stage detectors' RoI heads: per RoI, not per pixel (their share of the whole-model figure, 1000 proposals "
        "and 100 masked, taken out first): every stage's box head on the sampled RoIs in training and on the RPN's "
        "proposals in testing, the mask heads on the detections kept and on "
        f"{POSITIVES_PER_OBJECT:g} positive RoIs per object and stage in training ({COCO_OBJECTS_PER_IMAGE:g} objects per "
        "COCO image), as the config's counts and the profile's roi_scale set them; "
        + ("at the measured RoI-head rates" if rate.roi_eval_gflops_per_s else "at the rates above"),
        "devices: " + ("each stage's SLURM settings (params.yaml slurm:, per kind, profile and run)" if executor == "slurm"
                       else "this machine's visible devices") + "; wall time assumes perfect scaling over the devices and no queueing",
        f"data and tables stages use no device: a process's start-up; the figures stage builds its model ({MODEL_BUILD_S:g} s), "
        f"runs one forward pass and draws ({RENDER_S:g} s)",
    ]
    if not study.peers.run[profile]:
        found.append(f"peers.{profile} is false: the STViT and PaCa-ViT stages are left out (their cost is shown apart)")
    return found


# ---- text


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 0.1 else f"{h * 3600:,.0f} s"


def render(p: Plan) -> str:
    """The plan as text: one line per stage, the total, per table, the peers, the assumptions."""
    lines = [f"Plan of the {p.profile} profile, {' and '.join(p.lanes)} lane{'s' if len(p.lanes) > 1 else ''} "
             f"({p.executor} executor; every stage, as if none had run)", ""]
    header = f"{'stage':58} {'devices':>9} {'device-h':>10} {'wall':>10} {'jobs':>5}"
    lines += [header, "-" * len(header)]
    for s in p.stages:
        wall = f"{s.wall_s / 3600:,.1f} h" if s.wall_s >= 360 else f"{s.wall_s:,.0f} s"
        mark = (" (peer)" if s.peer else "") + (" [released]" if s.lane == "released" else "")
        lines.append(f"{(s.stage + mark)[:58]:58} {f'{s.devices} {s.device_kind}':>9} {s.device_hours:>10,.1f} {wall:>10} {s.jobs:>5}")
    device_h, serial_h = p.total()
    kind = "GPU" if any(s.device_kind == "GPU" for s in p.stages) else "device"
    lines += ["-" * len(header), f"total: {device_h:,.0f} {kind}-hours ({p.throughput.device}); "
              f"{serial_h:,.1f} h of wall time if the stages ran one after another", ""]
    peers = [s for s in p.stages if s.peer]
    if peers:
        lines.append(f"of which the peers (STViT, PaCa-ViT; no paper table prints them): {p.total(peers)[0]:,.0f} {kind}-hours "
                     f"(set peers.{p.profile}: false in params.yaml to leave them out)")
    if p.skipped_peers:
        lines.append(f"left out (peers.{p.profile}: false): the peers' {len(p.skipped_peers)} stages, {p.total(p.skipped_peers)[0]:,.0f} {kind}-hours")
    for lane, (name, hours) in p.first.items():
        wall = f"{hours:,.1f} h" if hours >= 0.1 else f"{hours * 3600:,.0f} s"
        lines.append(f"first trustworthy number, {lane} lane: {name} after {wall} of wall time")
    lines += ["", f"per table ({kind}-hours: its own stages / with what they need upstream, e.g. `dvc repro` of them alone):"]
    for table, (own, up) in p.per_table().items():
        if own or up:
            lines.append(f"  {table:8} {own:>10,.1f} {up:>10,.1f}")
    lines += published(p)
    if p.slurm:
        lines += ["", "SLURM jobs per stage kind (params.yaml slurm:, as `secvit repro --executor slurm` submits them; runs may override):"]
        lines += [f"  {kind:10} {described}" + (f"\n  {'':10} REFUSED: {problem}" if problem else "") for kind, described, problem in p.slurm]
    lines += ["", "assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)


def published(p: Plan) -> list[str]:
    """The plan against published training costs (:mod:`.references`): per figure, the range of its stages' ratios."""
    found = compare(p)
    if not found:
        return []
    lines = ["", f"against published training costs (planned {p.throughput.device} seconds per trained image over the published "
             f"figure, at 1 A100 = {V100_PER_A100:g} V100 and scaled by GFLOPs per image; the plan is checked to within 1.5x either way):"]
    for ref in dict.fromkeys(c.reference for c in found):
        ratios = [c.ratio for c in found if c.reference == ref]
        low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
        span = f"{low}x" if low == high else f"{low}-{high}x"
        lines.append(f"  {ref.model}: {span} over {len(ratios)} stage(s); {ref.measured}, {ref.gflops:g} GFLOPs ({ref.gflops_source}); {ref.source}")
    lines += [f"  GFLOPs per image of {kind} stages and figures alike: {what}" for kind, what in CONVENTION.items()]
    lines += [f"  not checked: {what}: {why}" for what, why in UNCHECKED]
    lines.append(f"  GPU ratio: {GPU_RATIO_SOURCE}")
    return lines
