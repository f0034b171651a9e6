"""The study's cost before anything runs: ``secvit plan``.

For every stage of a profile (``dvc.yaml``'s stage instances, from ``params.yaml``) the plan
estimates the work in forward GFLOPs, the device-hours it needs and its wall time under its SLURM
settings (or on this machine's devices), then totals them, per paper table and for the peers.

The model, per stage process::

    wall  = startup + (train + eval + counts) / devices + checkpoints
    train = trained images x GFLOPs(image) / train rate(GFLOPs(image))    (one forward + backward + step each)
    eval  = evaluated images x GFLOPs(image) / eval rate(GFLOPs(image))   (forward only)
    counts = the stage's fvcore FLOP counts (complexity, and each dense stage's whole model)
    device-hours = devices x wall / 3600

A rate depends on the work per image where it was measured at several sizes (a CPU runs 32-pixel
images far below its 224-pixel rate); GPU defaults are one rate.

GFLOPs are fvcore counts of one image's forward pass (one multiply-add = one FLOP, every op
counted: ``secvit.complexity``) of the model at the stage's image size; for detectors and
segmentors, the paper's printed whole-model FLOPs (tables 3-5) where the paper prints the row, else
the backbone scaled to the dense input plus the detector's or head's share of the paper's SecViT-S
row. A :class:`Throughput` gives the rates: measured on the user's device by ``secvit bench
train`` (:func:`measure`), or a documented default for A100 and H100 (:func:`gpu_default`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError
from secvit.params import check_profile, load_params, profile_section, section

#: Where ``secvit bench train`` writes its measurement and ``secvit plan`` looks for one.
THROUGHPUT_FILE = Path("runs/bench/throughput.json")
#: The second image size at which ``secvit bench train`` times evaluation (the complexity stage's
#: and table 2's), besides the recipe's: :attr:`Throughput.eval_curve`.
CURVE_SIZE = 224
#: Where measured FLOPs are cached (keyed by model, options, size and the models' source).
FLOPS_CACHE = Path("runs/bench/flops.json")

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


def table2_inference_rate() -> tuple[float, list[str]]:
    """The A100 inference rate in GFLOPs/s implied by the paper's table 2: the mean over its SEC
    rows of throughput (images/s, A100, batch 64) x GFLOPs (paper convention); and those rows."""
    from secvit.tables.paper import load_paper_tables

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


# ---- FLOPs of the models (measured once, cached)


def _models_digest() -> str:
    import secvit.models

    digest = hashlib.sha256()
    for path in sorted(Path(secvit.models.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Flops:
    """GFLOPs (all ops) and parameters of models at image sizes, measured with fvcore once and
    cached in ``runs/bench/flops.json`` (entries of other model code are not reused)."""

    def __init__(self, cache: Path | None = FLOPS_CACHE) -> None:
        self.cache = cache
        self.digest = _models_digest()
        self.entries: dict[str, list[float]] = {}
        if cache is not None and cache.is_file():
            try:
                self.entries = json.loads(cache.read_text()).get(self.digest, {})
            except ValueError:
                self.entries = {}
        self.dirty = False

    def __call__(self, model: str, size: int, options: dict[str, Any] | None = None) -> tuple[float, int]:
        key = f"{model}|{json.dumps(options or {}, sort_keys=True)}|{size}"
        if key not in self.entries:
            from secvit.complexity import measure

            result = measure(model, size, **(options or {}))
            self.entries[key] = [result.gflops, result.params]
            self.dirty = True
        gflops, params = self.entries[key]
        return gflops, int(params)

    def cached(self, key: str, compute: Callable[[], float]) -> float:
        """A figure under ``key`` (e.g. a detector head's GFLOPs per RoI), computed once."""
        if key not in self.entries:
            self.entries[key] = [compute()]
            self.dirty = True
        return self.entries[key][0]

    def save(self) -> None:
        if self.cache is not None and self.dirty:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            from secvit.atomic import write_text  # two measurements side by side may save at once

            write_text(self.cache, json.dumps({self.digest: self.entries}, indent=0, sort_keys=True))
            self.dirty = False


# ---- the stages of a profile


@dataclass
class StagePlan:
    """One stage's estimate."""

    stage: str
    kind: str  # data, complexity, pretrain, evaluate, detect, segment, tables, figures
    tables: list[str]  # the paper tables it serves (table1..table8), or ["peers"]
    peer: bool  # an STViT / PaCa-ViT run (no paper table prints it)
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
    stages: list[StagePlan]  # the stages that would run
    skipped_peers: list[StagePlan]  # peer stages left out by `peers.<profile>: false`
    assumptions: list[str]

    def total(self, stages: Iterable[StagePlan] | None = None) -> tuple[float, float]:
        """(device-hours, wall hours if run one after another) of ``stages`` (default: all that would run)."""
        chosen = list(self.stages if stages is None else stages)
        return sum(s.device_hours for s in chosen), sum(s.wall_s for s in chosen) / 3600

    def closure(self, names: Iterable[str]) -> list[StagePlan]:
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
        """Device-hours of each table's own stages and with everything they need upstream."""
        names = sorted({t for s in self.stages + self.skipped_peers for t in s.tables})
        out = {}
        for table in names:
            own = [s for s in self.stages + self.skipped_peers if table in s.tables]
            out[table] = (self.total(own)[0], self.total(self.closure(s.stage for s in own))[0])
        return out

    def to_dict(self) -> dict[str, Any]:
        device_hours, serial_h = self.total()
        peers = [s for s in self.stages if s.peer]
        return {
            "profile": self.profile,
            "executor": self.executor,
            "throughput": self.throughput.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "skipped_peers": [s.to_dict() for s in self.skipped_peers],
            "total_device_hours": device_hours,
            "total_serial_wall_hours": serial_h,
            "peers_device_hours": self.total(peers or self.skipped_peers)[0],
            "tables": {t: {"own_device_hours": own, "with_upstream_device_hours": up} for t, (own, up) in self.per_table().items()},
            "assumptions": self.assumptions,
        }


@dataclass(frozen=True)
class _Resources:
    devices: int
    kind: str
    timeout_min: int | None


def peer_settings(params: dict[str, Any], profile: str) -> tuple[tuple[str, ...], bool]:
    """(model name prefixes of the peers, whether ``profile`` runs them): params.yaml ``peers``."""
    peers = section(params, "peers")
    families = tuple(peers.get("families") or ())
    run = peers.get(profile, True)
    if not isinstance(run, bool):
        raise SecvitError(f"setting 'peers.{profile}' must be true or false, got {run!r}")
    return families, run


def left_out_peers(params_path: Path, profile: str) -> set[str]:
    """The stages of ``profile`` that ``peers.<profile>: false`` leaves out (none when it is true):
    the peers' pretraining and evaluation, and dense runs with a peer backbone."""
    params = load_params(params_path)
    families, run_peers = peer_settings(params, profile)
    if run_peers:
        return set()
    names = set()
    for key, run in (params.get("runs") or {}).items():
        if run["profile"] == profile and is_peer(run["model"], families):
            names |= {f"pretrain@{key}", f"evaluate@{key}"}
    for group, stage in (("detection_runs", "detect"), ("segmentation_runs", "segment")):
        for key, run in (params.get(group) or {}).items():
            if run["profile"] == profile and is_peer(run["model"], families):
                names.add(f"{stage}@{key}")
    return names


def is_peer(model: str, families: tuple[str, ...]) -> bool:
    return any(model.startswith(f) for f in families)


def _table_of(model: str, families: tuple[str, ...]) -> str:
    if is_peer(model, families):
        return "peers"
    return "table1" if model.startswith("secvit_") else "table2"


def _resources(kind: str, executor: str, params_path: Path, gpu: bool) -> _Resources:
    """Devices a stage of ``kind`` uses: its SLURM settings, or this machine's devices (local)."""
    if executor == "slurm":
        from secvit.orchestrate.slurm import load_slurm_config

        cfg = load_slurm_config(params_path).for_kind(kind)
        if cfg.gpus_per_node:
            return _Resources(cfg.nodes * cfg.gpus_per_node, "GPU", cfg.timeout_min)
        return _Resources(cfg.nodes * cfg.ntasks_per_node(), "GPU" if gpu else "CPU", cfg.timeout_min)
    from secvit.orchestrate.launch import visible_devices

    return _Resources(visible_devices(), "GPU" if gpu else "CPU", None)


def _count(data: dict[str, Any], dataset: str, split: str) -> int:
    """Images of a split: the real dataset's expected count, or what the smoke profile generates."""
    expected = (data.get("expected") or {}).get(dataset)
    if expected:  # ADE20K names its splits training and validation
        return int(expected[{"train": "training", "val": "validation"}[split] if dataset == "ade20k" else split])
    gen = (data.get("generate") or {}).get(dataset)
    if not gen:
        raise SecvitError(f"cannot count the {dataset} images: neither data.expected nor data.generate names it")
    if dataset == "imagenet":
        return int(gen["num_classes"] * gen[f"{split}_per_class"])
    return int(gen[f"{split}_images"])


def _schedule(task: str, pattern: str, model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Length, validation interval, batch per device and whether the config counts epochs, as the
    stage runs it: the config's values with the profile's overrides."""
    from secvit.downstream.run import Overrides
    from secvit.params import from_section
    from secvit.pipelines.downstream import config_file

    s = from_section(Overrides, overrides, f"{task}.overrides")
    path, _ = config_file(pattern, model)
    cfg = _config(str(path))
    by_epoch = cfg["type"] == "EpochBasedTrainLoop"
    length = s.length if s.length is not None else cfg["max_epochs" if by_epoch else "max_iters"]
    return {
        "config": str(path), "by_epoch": by_epoch, "length": length, "val_every": s.val_every or cfg["val_interval"],
        "batch_per_device": s.batch_per_device or cfg["batch_size"], "image_scale": s.image_scale, "roi_scale": s.roi_scale,
        "checkpoint_every": s.checkpoint_every or cfg["checkpoint_interval"],
        "global_batch": s.global_batch or cfg["recipe_batch"],  # what iteration-based runs keep at any device count
    }


_CONFIGS: dict[str, dict[str, Any]] = {}


def _config(path: str) -> dict[str, Any]:
    """The loop type, length, validation interval and batch size of an OpenMMLab config."""
    if path not in _CONFIGS:
        import warnings

        from mmengine.config import Config

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = Config.fromfile(path)
        loop = cfg.train_cfg
        _CONFIGS[path] = {
            "config": cfg,
            "type": loop.get("type", "EpochBasedTrainLoop"), "max_epochs": loop.get("max_epochs"), "max_iters": loop.get("max_iters"),
            "val_interval": loop.get("val_interval", 1), "batch_size": cfg.train_dataloader.batch_size,
            "checkpoint_interval": cfg.default_hooks.checkpoint.get("interval", 1),
            "recipe_batch": (cfg.get("auto_scale_lr") or {}).get("base_batch_size"),
        }
    return _CONFIGS[path]


#: The dense settings' reference input (height, width) of the paper's FLOPs: detectors at 1280x800
#: (tables 3-4 do not say; the common convention), segmentors as params.yaml `flops_size`.
DETECTION_SIZE = (800, 1280)
#: One fvcore FLOP count costs a forward pass plus this many seconds of tracing every op in Python
#: (SecViT-T at 224 and 448 and SecViT-S at 224, 2026-12-06, EPYC host: 2.0-2.1 s; CPU-side, as on a GPU node).
FVCORE_TRACE_S = 2.0
#: Building one registered model on a CPU, weights initialised: 6.1 s for seven (SecViT-T to -L, SEC-Swin-T,
#: SEC-FasterViT-0, STViT-S; EPYC host, 2026-12-07). The tables stage builds each table-8 model whose
#: parameters the complexity stage did not measure, to count them.
MODEL_BUILD_S = 0.9
#: Drawing figure 4 (matplotlib: the cluster overlays, saved as PNG): 0.8 s (EPYC host, 2026-12-07).
RENDER_S = 0.8
#: What a detection or segmentation stage does on its CPU before its first iteration, besides imports:
#: resolving the config's ``mmdet::``/``mmseg::`` bases and building the runner (environment report, model,
#: datasets, hooks). 2.4-6.8 s for the smoke profile's Mask R-CNN, Cascade Mask R-CNN, RetinaNet, UperNet
#: and Semantic FPN stages (EPYC host, 2026-12-07).
DENSE_RUNNER_S = 4.0
#: The recipes' image sizes (mmdet's and mmseg's base configs): detection resizes into 1333x800, ADE20K
#: into 2048x512 and trains on 512x512 crops. Real images are taken as 4:3 (COCO's and ADE20K's typical).
DETECTION_SCALE, SEGMENTATION_SCALE, SEGMENTATION_CROP, REAL_ASPECT = (1333, 800), (2048, 512), 512, 4 / 3
#: Test-time cost of the multi-scale + flip test relative to one single-scale test: 6 scales
#: (0.5-1.75, mean area 1.45x) x 2 flips.
MS_FLIP_FACTOR = 2 * (0.5**2 + 0.75**2 + 1 + 1.25**2 + 1.5**2 + 1.75**2) / 6


#: Objects per training image of COCO train2017 (860,001 instances in 118,287 images); generated sets:
#: secvit.data.synthetic.COCO_OBJECTS.
COCO_OBJECTS_PER_IMAGE = 7.27
#: Positive RoIs per object that a two-stage detector's sampler draws per stage in training (its mask head's
#: RoIs; at most the sampler's positive fraction): an assumption. Smoke runs (untrained heads, 2 objects an image,
#: 2026-12-07) drew 6.7 (Mask R-CNN) and 2.9 a stage (Cascade) from 512 sampled RoIs, 2.4 and 1.7 from 64 (roi_scale 1/8).
POSITIVES_PER_OBJECT = 5.0


@dataclass(frozen=True)
class RoIWork:
    """Forward GFLOPs per image of a two-stage detector's RoI heads, which run once per RoI, not per pixel."""

    train: float = 0.0  # every stage's box head on its sampled RoIs, mask head on the positive ones
    test: float = 0.0  # every stage's box head on the RPN's proposals, every mask head on the detections
    counted: float = 0.0  # as a FLOP count includes them (secvit.downstream.run.model_complexity)


def _head_gflops(head: dict[str, Any], extractor: dict[str, Any], flops: Flops) -> float:
    """GFLOPs of an mmdet RoI head on one RoI (fvcore), the RoI as its extractor pools it."""
    channels, size = extractor["out_channels"], extractor["roi_layer"]["output_size"]

    def count() -> float:
        import torch
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules

        from secvit.complexity import count_flops

        register_all_modules(init_default_scope=False)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            module = MODELS.build(dict(head)).eval()
            return count_flops(module, torch.zeros(1, channels, size, size))[0] / 1e9

    return flops.cached(f"roi|{json.dumps(head, sort_keys=True)}|{channels}|{size}", count)


def _roi_work(path: str, roi_scale: float, objects: float, flops: Flops) -> RoIWork:
    """The RoI heads' work per image in ``path``'s detector with its RoI counts scaled by ``roi_scale`` (none for a
    one-stage detector): the sampled RoIs in training, of which ``objects`` x :data:`POSITIVES_PER_OBJECT` positive
    (masked), at most the sampler's positive fraction; the RPN's proposals and the kept detections in testing."""
    from secvit.downstream.run import COUNTED_PROPOSALS, MASKED_ROIS, scale_roi_counts

    cfg = copy.deepcopy(_config(path)["config"])  # the cached config stays as its file says
    scale_roi_counts(cfg, roi_scale)
    model = cfg.model
    head = model.get("roi_head")
    if not head:
        return RoIWork()
    stages = head.get("num_stages", 1)
    boxes = head.bbox_head if isinstance(head.bbox_head, list) else [head.bbox_head] * stages
    box = [_head_gflops(b.to_dict(), head.bbox_roi_extractor.to_dict(), flops) for b in boxes]
    mask = _head_gflops(head.mask_head.to_dict(), head.mask_roi_extractor.to_dict(), flops) if head.get("mask_head") else 0.0
    samplers = [r.sampler for r in (model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn] * stages)]
    proposals, detections = model.test_cfg.rpn.max_per_img, model.test_cfg.rcnn.max_per_img
    train = sum(s.num * g + min(s.num * s.pos_fraction, objects * POSITIVES_PER_OBJECT) * mask for s, g in zip(samplers, box))
    return RoIWork(train, sum(proposals * g for g in box) + stages * detections * mask,
                   sum(COUNTED_PROPOSALS * g for g in box) + stages * MASKED_ROIS * mask)


def _dense_row(table: str, setting: dict[str, str], model: str, column: str, backbone: float, small_backbone: float,
               head_scale: float = 1.0) -> float:
    """A detector's or segmentor's figure (``gflops`` or ``params_m``): the paper's printed figure for our
    model in this setting, else ``backbone`` plus the setting's non-backbone share of the paper's SecViT-S
    row (its printed figure less ``small_backbone``), times ``head_scale``."""
    from secvit.tables.paper import paper_value

    try:
        printed = paper_value(table, model, column, setting)
    except ValueError:
        printed = None
    if printed is not None:
        return float(printed)
    head = float(paper_value(table, "secvit_small", column, setting)) - small_backbone
    return backbone + max(head, 0.0) * head_scale


def _dense_gflops(table: str, setting: dict[str, str], model: str, ref: tuple[int, int], row_ref: tuple[int, int], flops: Flops) -> float:
    """Whole-model GFLOPs of a detector or segmentor at ``ref``: printed, else the backbone scaled from 224x224
    plus the head share of SecViT-S's row (printed at ``row_ref``), scaled to ``ref``."""
    area, row_area = ref[0] * ref[1], row_ref[0] * row_ref[1]
    return _dense_row(table, setting, model, "gflops", flops(model, 224)[0] * area / 224**2,
                      flops("secvit_small", 224)[0] * row_area / 224**2, area / row_area)


def _dense_params(table: str, setting: dict[str, str], model: str, flops: Flops) -> float:
    """Whole-model parameters of a detector or segmentor (printed, else the backbone's plus SecViT-S's head share)."""
    return 1e6 * _dense_row(table, setting, model, "params_m", flops(model, 224)[1] / 1e6, flops("secvit_small", 224)[1] / 1e6)


def _fit(height: float, width: float, scale: tuple[int, int]) -> float:
    """The area of a ``height x width`` image resized, keeping its ratio, to fit ``scale`` (long, short side)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return height * width * factor**2


def _dense_areas(task: str, generated: dict[str, Any] | None, image_scale: float) -> tuple[float, float]:
    """Pixels of one test image and of one training image as a dense stage sees them: the recipe's
    resize (scaled by ``image_scale``) of the generated images, or of a typical 4:3 real image; the
    segmentation recipe trains on crops."""
    base = DETECTION_SCALE if task == "detection" else SEGMENTATION_SCALE
    scale = (round(base[0] * image_scale), round(base[1] * image_scale))
    height, width = generated["size"] if generated else (3.0, 3.0 * REAL_ASPECT)
    test = _fit(height, width, scale)
    train = test if task == "detection" else min(test, (SEGMENTATION_CROP * image_scale) ** 2)
    return test, train


def plan(profile: str, params_path: Path = Path("params.yaml"), throughput: Throughput | None = None, executor: str = "local",
         flops: Flops | None = None, only: Sequence[str] | None = None) -> Plan:
    """The estimate of every stage of ``profile`` (``only``: of the stages matching these shell patterns)."""
    check_profile(profile)
    if executor not in ("local", "slurm"):
        raise SecvitError(f"unknown executor {executor!r}; choose local or slurm")
    params = load_params(params_path)
    rate = throughput or load_throughput(None, params_path.parent)
    flops = flops or Flops(params_path.parent / FLOPS_CACHE)
    families, run_peers = peer_settings(params, profile)
    data = profile_section(params, profile, "data")
    from secvit.engine.config import pretrain_config
    from secvit.models.variants import ablation_options
    from secvit.pipelines.sweep import ablation_config, parse_clusters, sweep_config
    from secvit.runs import run_key

    recipe = pretrain_config(params_path, profile, None)  # the shared recipe; each run's own values below
    gpu = not rate.measured or str(rate.measured.get("device", "")).startswith("cuda")  # the defaults are GPUs
    stages: list[StagePlan] = []
    res_cache: dict[str, _Resources] = {}

    def res(kind: str) -> _Resources:
        if kind not in res_cache:
            res_cache[kind] = _resources(kind, executor, params_path, gpu)
        return res_cache[kind]

    def wanted(stage: str) -> bool:
        return only is None or any(fnmatchcase(stage, pattern) for pattern in only)

    def add(stage: str, kind: str, tables: list[str], peer: bool, upstream: list[str], gflops: float, train: int, evals: int,
            checkpoint_bytes: float = 0.0, startup: float | None = None, eval_gflops: float | None = None, extra_s: float = 0.0,
            roi: RoIWork | None = None) -> None:
        """``train`` images of ``gflops`` each trained, ``evals`` of ``eval_gflops`` (default: ``gflops``)
        evaluated, and on each the ``roi`` heads' work at their own rates, plus ``extra_s`` device-seconds of
        other work (FLOP counts)."""
        r = res(kind)
        eval_gflops = gflops if eval_gflops is None else eval_gflops
        compute = extra_s + (train * gflops / rate.train_rate(gflops) if train else 0.0) \
            + (evals * eval_gflops / rate.eval_rate(eval_gflops) if evals else 0.0)
        if roi is not None:
            compute += (train * roi.train / rate.roi_train_rate(roi.train) if train and roi.train else 0.0) \
                + (evals * roi.test / rate.roi_eval_rate(roi.test) if evals and roi.test else 0.0)
            gflops += roi.train
        stages.append(StagePlan(
            stage, kind, tables, peer, upstream, gflops, train, evals, r.devices if compute else 1, r.kind if compute else "CPU",
            rate.startup_s if startup is None else startup, compute, checkpoint_bytes / 1e9 / rate.checkpoint_gb_per_s, r.timeout_min,
        ))

    data_stages = {d: f"data-{profile}@{d}" for d in ("imagenet", "coco", "ade20k")}
    for name in data_stages.values():
        if wanted(name):
            add(name, "data", [], False, [], 0.0, 0, 0)

    # complexity: a FLOP count (fvcore traces one forward pass) of each model, sweep setting and ablation,
    # and the inference throughput of each model at the profile's batch
    cx = profile_section(params, profile, "complexity")
    if wanted(f"complexity@{profile}"):
        sweep, ablations = sweep_config(params_path), ablation_config(params_path)
        counted = [(m, {}) for m in cx["models"]] + [(sweep.model, {"clusters": parse_clusters(c)}) for c in sweep.clusters]
        counted += [(ablations.model, ablation_options(v, ablations.model)) for v in ablations.variants]
        seconds = 0.0
        for model, options in counted:
            g = flops(model, cx["img_size"], options)[0]
            timed = (cx["throughput_steps"] + cx["throughput_warmup"]) * cx["throughput_batch"] if not options and cx["throughput_steps"] else 0
            seconds += FVCORE_TRACE_S + (1 + timed) * g / rate.eval_rate(g)
        add(f"complexity@{profile}", "complexity", ["table2", "table8"], False, [], 0.0, 0, 0, extra_s=seconds)

    def pretrain_stage(stage: str, model: str, run: str, options: dict[str, Any], tables: list[str], upstream: list[str]) -> None:
        if not wanted(stage):
            return
        cfg = pretrain_config(params_path, profile, run)
        gflops, params_count = flops(model, cfg.img_size, options)
        train_n, val_n = _count(data, "imagenet", "train"), _count(data, "imagenet", "val")
        steps = train_n // cfg.batch_size
        evals = sum(1 for e in range(cfg.epochs) if (e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs)
        # last.pth: weights, EMA, AdamW's two moments (float32); mid-epoch ones every checkpoint_every_steps; best.pth
        full = params_count * 4 * (2 + (1 if cfg.ema else 0) + 1)
        mid = (steps - 1) // cfg.checkpoint_every_steps if cfg.checkpoint_every_steps else 0
        ckpt = cfg.epochs * ((1 + mid) * full + params_count * 4)
        add(stage, "pretrain", tables, is_peer(model, families), upstream, gflops, cfg.epochs * steps * cfg.batch_size,
            evals * val_n * (2 if cfg.ema else 1), ckpt)

    runs = {k: v for k, v in (params.get("runs") or {}).items() if v["profile"] == profile}
    for key, run in runs.items():
        model = run["model"]
        table = _table_of(model, families)
        pretrain_stage(f"pretrain@{key}", model, model, {}, [table], [data_stages["imagenet"]])
        if not wanted(f"evaluate@{key}"):
            continue
        gflops, _ = flops(model, recipe.img_size)
        add(f"evaluate@{key}", "evaluate", [table], is_peer(model, families), [f"pretrain@{key}"], gflops, 0, _count(data, "imagenet", "val"))
    plain = {run["model"]: f"pretrain@{key}" for key, run in runs.items()}

    sweep = sweep_config(params_path)
    for text in sweep.clusters:
        clusters = parse_clusters(text)
        run = run_key(sweep.model, clusters)
        upstream = [data_stages["imagenet"]] + ([plain[sweep.model]] if sweep.model in plain else [])
        pretrain_stage(f"sweep@{profile}-{text}", sweep.model, run, {"clusters": clusters}, ["table7"], upstream)
    ablations = ablation_config(params_path)
    for variant in ablations.variants:
        run = run_key(ablations.model, None, variant)
        upstream = [data_stages["imagenet"]] + ([plain[ablations.model]] if ablations.model in plain else [])
        pretrain_stage(f"ablate@{profile}-{variant}", ablations.model, run, ablation_options(variant, ablations.model), ["table6"], upstream)

    from secvit.data.synthetic import COCO_OBJECTS
    from secvit.pipelines.downstream import DETECTION_CONFIGS, SEGMENTATION_CONFIGS

    def dense(stage: str, task: str, dataset: str, table: str, setting: dict[str, str], pattern: str, run: dict[str, Any]) -> None:
        model = run["model"]
        if not wanted(stage):
            return
        settings = profile_section(params, profile, task)
        sched = _schedule(task, pattern, model, settings["overrides"])
        row_ref = DETECTION_SIZE if task == "detection" else tuple(settings["flops_size"]["default"])
        ref = DETECTION_SIZE if task == "detection" else tuple(settings["flops_size"].get(model, row_ref))
        at_ref = _dense_gflops(table, setting, model, ref, row_ref, flops)  # the whole model on one image of the reference size
        generated = (data.get("generate") or {}).get(dataset)
        objects = sum(COCO_OBJECTS) / 2 if generated else COCO_OBJECTS_PER_IMAGE
        roi = _roi_work(sched["config"], sched["roi_scale"], objects, flops) if task == "detection" else RoIWork()
        per_pixel = (at_ref - roi.counted) / (ref[0] * ref[1])  # the rest of the model works per pixel
        test_area, train_area = _dense_areas(task, generated, sched["image_scale"])
        train_n, val_n = _count(data, dataset, "train"), _count(data, dataset, "val")
        if sched["by_epoch"]:
            trained = sched["length"] * train_n
        else:  # iterations of the global batch, on any device count (secvit.downstream.run._set_batch)
            trained = sched["length"] * sched["global_batch"]
        # mmengine validates every val_every and after the last iteration; that last validation is the test
        # (secvit.downstream.run.run), and the multi-scale + flip test is one more
        tests = math.ceil(sched["length"] / sched["val_every"]) + (MS_FLIP_FACTOR if settings.get("ms_flip") else 0)
        # each checkpoint: weights and AdamW's two moments (float32); a finished run rewrites its last one, weights only
        ckpt = _dense_params(table, setting, model, flops) * 4 * (3 * math.ceil(sched["length"] / sched["checkpoint_every"]) + 1)
        weights = str(run.get("weights", ""))
        upstream = [data_stages[dataset]] + [p for m, p in plain.items() if weights == f"runs/{profile}/pretrain/{m}/best.pth"]
        peer = is_peer(model, families)
        # and the stage's own FLOP count of the whole model at the reference size (metrics.json's gflops)
        add(stage, "detect" if task == "detection" else "segment", ["peers" if peer else table], peer, upstream,
            per_pixel * train_area, trained, int(val_n * tests), ckpt, startup=rate.startup_s + rate.dense_startup_s + DENSE_RUNNER_S,
            eval_gflops=per_pixel * test_area, roi=roi, extra_s=FVCORE_TRACE_S + at_ref / rate.eval_rate(at_ref))

    for key, run in (params.get("detection_runs") or {}).items():
        if run["profile"] == profile:
            table = "table3" if run["schedule"] == "3x_ms" else "table4"
            pattern = DETECTION_CONFIGS[(run["detector"], run["schedule"])]
            dense(f"detect@{key}", "detection", "coco", table, {"detector": run["detector"], "schedule": run["schedule"]}, pattern, run)
    for key, run in (params.get("segmentation_runs") or {}).items():
        if run["profile"] == profile:
            dense(f"segment@{key}", "segmentation", "ade20k", "table5", {"head": run["head"]}, SEGMENTATION_CONFIGS[run["head"]], run)

    results = [s.stage for s in stages if s.kind in ("complexity", "pretrain", "evaluate", "detect", "segment")]
    if wanted(f"tables@{profile}"):
        from secvit.tables.paper import load_paper_tables

        built = {row["ours"] for _, row in load_paper_tables()["table8"].iter_rows() if row.get("ours")} - set(cx["models"])
        add(f"tables@{profile}", "tables", [], False, results, 0.0, 0, 0, startup=rate.startup_s + MODEL_BUILD_S * len(built))
    if wanted(f"figures@{profile}"):  # builds the figure's model, one forward pass at 224 px, draws it
        figure = profile_section(params, profile, "figures")["model"]
        g = flops(figure, 224)[0]
        add(f"figures@{profile}", "figures", [], False, [s for s in results if s.startswith("pretrain@")], 0.0, 0, 0,
            startup=rate.startup_s + MODEL_BUILD_S + g / rate.eval_rate(g) + RENDER_S)
    flops.save()

    skipped = [s for s in stages if s.peer and not run_peers]
    kept = [s for s in stages if not (s.peer and not run_peers)]
    for s in kept:
        s.upstream = [u for u in s.upstream if u not in {p.stage for p in skipped}]
    assumptions = [
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
        "devices: " + ("each stage kind's SLURM settings (params.yaml slurm:)" if executor == "slurm" else "this machine's visible devices")
        + "; wall time assumes perfect scaling over the devices and no queueing",
        f"data, tables and figures stages use no device: start-up, plus for tables the builds of the table-8 models that the "
        f"complexity stage did not measure ({MODEL_BUILD_S:g} s each), for figures its model's build, one forward pass and "
        f"{RENDER_S:g} s of drawing",
    ]
    if not run_peers:
        assumptions.append(f"peers.{profile} is false: the STViT and PaCa-ViT stages are left out (their cost is shown apart)")
    return Plan(profile, rate, executor, kept, skipped, assumptions)


# ---- measuring the rates on this device (`secvit bench train`)


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc), or 0 where unknown."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - an estimate only
        return 0.0


def measure(profile: str, model: str, params_path: Path = Path("params.yaml"), steps: int = 6, warmup: int = 2,
            device: str | None = None) -> Throughput:
    """Time training and evaluation steps of ``model`` with the profile's recipe (image size, batch
    per device, optimizer, EMA, speed options) on synthetic batches, one checkpoint write, and this
    process's start-up (imports and model build); return the rates as a :class:`Throughput`."""
    import torch

    from secvit.checkpoint import atomic_save
    from secvit.engine.amp import autocast, recipe_dtype
    from secvit.engine.config import pretrain_config
    from secvit.engine.distributed import DistEnv
    from secvit.engine.train import build_training
    from secvit.models.registry import check_model

    check_model(model)
    if steps < 1 or warmup < 0:
        raise SecvitError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    params = load_params(params_path)
    own = model in (profile_section(params, profile, "pretrain_runs") or {})
    cfg = pretrain_config(params_path, profile, model if own else None)  # the model's run settings, if it has a run
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = DistEnv(0, 1, 0, dev)
    classes = 1000
    training = build_training(model, cfg, classes, env, {})
    # On a CPU, busy time: this process's CPU seconds over its threads, which is the wall time of an idle
    # machine whatever else runs beside the measurement (a GPU's work is not CPU time: wall time there)
    threads = torch.get_num_threads()
    clock = (lambda: time.process_time() / threads) if dev.type == "cpu" else time.perf_counter
    serial = time.process_time if dev.type == "cpu" else time.perf_counter  # for one-thread work (imports)
    startup = time.process_time() if dev.type == "cpu" else _process_age()  # imports and the model build
    batch = cfg.batch_per_device
    images = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=dev)
    targets = torch.randint(0, classes, (batch,), device=dev)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = recipe_dtype(cfg.amp_dtype, dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_step() -> None:
        with autocast(dev, dtype):
            loss = training.criterion(training.model(images), targets)
        loss.backward()
        training.optimizer.step()
        training.optimizer.zero_grad(set_to_none=True)
        if training.ema is not None:
            training.ema.update(training.model)

    def eval_step(batch_images: torch.Tensor) -> None:
        with torch.no_grad(), autocast(dev, dtype):
            training.model(batch_images)

    def images_per_s(step: Callable[[], None], count: int, warm: int, calls: int) -> float:
        """``count`` images per call of ``step``: ``warm`` calls untimed, then ``calls`` timed."""
        for _ in range(warm):
            step()
        sync()
        tic = clock()
        for _ in range(calls):
            step()
        sync()
        return calls * count / (clock() - tic)

    training.model.train()
    timings = {"train": images_per_s(train_step, batch, warmup, steps)}
    training.model.eval()
    timings["eval"] = images_per_s(lambda: eval_step(images), batch, warmup, steps)
    # evaluation at the complexity stage's size too (small images run far below a CPU's rate)
    flops_of = Flops(params_path.parent / FLOPS_CACHE)
    gflops, _ = flops_of(model, cfg.img_size)
    curve = [[gflops, timings["eval"] * gflops]]
    if cfg.img_size != CURVE_SIZE:
        large = torch.randn(min(batch, 8), 3, CURVE_SIZE, CURVE_SIZE, device=dev)
        if cfg.channels_last:
            large = large.contiguous(memory_format=torch.channels_last)
        large_gflops = flops_of(model, CURVE_SIZE)[0]
        curve.append([large_gflops, images_per_s(lambda: eval_step(large), len(large), 1, 2) * large_gflops])
    tic = serial()
    import mmdet.models  # noqa: F401 - what a detection or segmentation stage imports besides ours
    import mmengine.runner  # noqa: F401
    import mmseg.models  # noqa: F401

    dense_startup = serial() - tic
    roi_gflops, roi_train_step, roi_eval_step = _roi_steps(dev, dtype)
    roi_rates = [images_per_s(step, ROI_BATCH, 1, 2) * roi_gflops for step in (roi_train_step, roi_eval_step)]
    flops_of.save()
    state = {"model": training.model.state_dict(), "model_ema": training.ema.module.state_dict() if training.ema else None,
             "optimizer": training.optimizer.state_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pth"
        tic = time.perf_counter()
        atomic_save(state, path)
        seconds = time.perf_counter() - tic
        size = path.stat().st_size
    from secvit.bench import environment

    host = environment(dev)
    name = host["device_name"] if dev.type == "cuda" else f"CPU {host['device_name']}, {host['threads']} threads"
    measured = {
        "device": str(dev), "model": model, "profile": profile, "img_size": cfg.img_size, "batch": batch, "steps": steps,
        "train_images_per_s": timings["train"], "eval_images_per_s": timings["eval"], "gflops_per_image": gflops,
        "checkpoint_bytes": size, "checkpoint_s": seconds, "startup_s": startup, "host": os.uname().nodename,
        "environment": host,
    }
    return Throughput(
        name, f"measured by `secvit bench train --profile {profile} --model {model}` ({steps} steps of batch {batch} at "
        f"{cfg.img_size}px, synthetic data" + ("; CPU busy time: an idle machine's wall time)" if dev.type == "cpu" else ")"),
        timings["train"] * gflops, timings["eval"] * gflops, startup, size / 1e9 / max(seconds, 1e-6), measured, curve, dense_startup,
        *roi_rates,
    )


#: RoIs per timed batch of the RoI-head rates (a stage's heads see 64-1000 at a time)
ROI_BATCH = 32


def _roi_steps(dev: Any, dtype: Any) -> tuple[float, Callable[[], None], Callable[[], None]]:
    """GFLOPs per RoI, a training step and an evaluation step of a two-stage detector's RoI heads on
    :data:`ROI_BATCH` RoIs: mmdet's FCN mask head (four 3x3 convolutions on 14x14 RoIs, the bulk of their work)."""
    import torch
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    from secvit.complexity import count_flops
    from secvit.engine.amp import autocast

    head = FCNMaskHead(num_convs=4, in_channels=256, conv_out_channels=256, num_classes=80).to(dev)
    rois = torch.randn(ROI_BATCH, 256, 14, 14, device=dev)
    with torch.no_grad():
        gflops = count_flops(head.eval(), rois[:1])[0] / 1e9

    def train() -> None:
        head.train()
        with autocast(dev, dtype):
            loss = head(rois).float().square().mean()
        loss.backward()

    def evaluate() -> None:
        head.eval()
        with torch.no_grad(), autocast(dev, dtype):
            head(rois)

    return gflops, train, evaluate


def save_throughput(rate: Throughput, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rate.to_dict(), indent=1))
    return path


# ---- text


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 0.1 else f"{h * 3600:,.0f} s"


def render(p: Plan) -> str:
    """The plan as text: one line per stage, the total, per table, the peers, the assumptions."""
    lines = [f"Plan of the {p.profile} profile ({p.executor} executor; every stage, as if none had run)", ""]
    header = f"{'stage':58} {'devices':>9} {'device-h':>10} {'wall':>10} {'jobs':>5}"
    lines += [header, "-" * len(header)]
    for s in p.stages:
        wall = f"{s.wall_s / 3600:,.1f} h" if s.wall_s >= 360 else f"{s.wall_s:,.0f} s"
        mark = " (peer)" if s.peer else ""
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
    lines += ["", f"per table ({kind}-hours: its own stages / with what they need upstream, e.g. `dvc repro` of them alone):"]
    for table, (own, up) in p.per_table().items():
        if own or up:
            lines.append(f"  {table:8} {own:>10,.1f} {up:>10,.1f}")
    lines += ["", "assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)
