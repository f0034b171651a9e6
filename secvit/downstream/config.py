"""An OpenMMLab config (mmdet or mmseg) as a dense stage trains it.

The configs under ``pipelines/configs`` are complete recipes that stock tools run as they are. Which file a
setting runs is :data:`DETECTION_CONFIGS` / :data:`SEGMENTATION_CONFIGS` (:func:`config_file`);
:func:`prepare_config` only points one at a dataset, a work directory and backbone weights, and applies the
few size knobs of a :class:`Overrides` (the smoke profile shrinks runs with them): those of
``<profile>.<task>.overrides`` (tracked: they change results) with those of ``<profile>.<task>_speed``
(:data:`SPEED_OVERRIDES`: untracked, the same results in other time or logs), read by :func:`load_overrides`.
:func:`secvit.downstream.runner.train_and_test` then runs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secvit.downstream.runner import latest_checkpoint
from secvit.engine.distributed import launched_world_size
from secvit.errors import SecvitError
from secvit.models.registry import create
from secvit.params import from_section, load_params, profile_section

__all__ = [
    "CONFIGS", "DETECTION_CONFIGS", "SEGMENTATION_CONFIGS", "SPEED_OVERRIDES", "DownstreamSettings", "Overrides", "coco_classes",
    "config_file", "load_overrides", "prepare_config", "scale_image_sizes", "scale_roi_counts", "swap_backbone", "training_batch",
]

#: The OpenMMLab configs, data of the stage code: ``pipelines/configs`` of the repository (an editable install),
#: or ``secvit/pipelines/configs`` where the package is installed (pyproject.toml's package data).
CONFIGS = next(
    (p for p in (Path(__file__).resolve().parents[2] / "pipelines" / "configs", Path(__file__).resolve().parents[1] / "pipelines" / "configs")
     if p.is_dir()),
    Path(__file__).resolve().parents[2] / "pipelines" / "configs",
)

#: Config file of each detection setting (detector, schedule) and segmentation head, per backbone.
#: A backbone without its own file runs the recipe of the setting's first file with its backbone swapped.
DETECTION_CONFIGS = {
    ("mask_rcnn", "1x"): "mmdet/mask_rcnn/mask-rcnn_{model}_fpn_1x_coco.py",
    ("mask_rcnn", "3x_ms"): "mmdet/mask_rcnn/mask-rcnn_{model}_fpn_ms-3x_coco.py",
    ("cascade_mask_rcnn", "3x_ms"): "mmdet/cascade_mask_rcnn/cascade-mask-rcnn_{model}_fpn_ms-3x_coco.py",
    ("retinanet", "1x"): "mmdet/retinanet/retinanet_{model}_fpn_1x_coco.py",
}
SEGMENTATION_CONFIGS = {
    "semantic_fpn": "mmseg/sem_fpn/fpn_{model}_8xb2-80k_ade20k-512x512.py",
    "upernet": "mmseg/upernet/upernet_{model}_8xb2-160k_ade20k-512x512.py",
}


def config_file(pattern: str, model: str) -> tuple[Path, bool]:
    """The config for ``model`` from a name ``pattern``; (path, True) when the backbone must be swapped in."""
    own = CONFIGS / pattern.format(model=model.replace("_", "-"))
    if own.is_file():
        return own, False
    candidates = sorted(CONFIGS.glob(pattern.format(model="*")))
    if not candidates:
        raise SecvitError(f"no config matches {CONFIGS / pattern.format(model='*')}")
    return candidates[0], True


def coco_classes(root: Path) -> list[str]:
    """Category names of a COCO-layout dataset, in id order (the detector's class order)."""
    with open(root / "annotations" / "instances_val2017.json", "rb") as f:
        categories = json.load(f)["categories"]
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


@dataclass
class DownstreamSettings:
    """``<profile>.detection`` / ``<profile>.segmentation`` of params.yaml."""

    overrides: dict[str, Any]  # of the config's schedule and sizes (:class:`Overrides`)
    flops_size: dict[str, list[int]]  # (height, width) per backbone; "default" for the others
    ms_flip: bool = False  # segmentation: also test multi-scale with flip

    def size_for(self, model: str) -> tuple[int, int]:
        height, width = self.flops_size.get(model, self.flops_size["default"])
        return int(height), int(width)


SIZE_KEYS = ("scale", "scales", "crop_size", "size", "img_scale")
MIN_SIDE = 32
DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
EVALUATORS = ("val_evaluator", "test_evaluator")


@dataclass
class Overrides:
    """Overrides of a config's schedule and sizes (``<profile>.detection.overrides`` /
    ``<profile>.segmentation.overrides``; None keeps the config's value). Not to be confused with a
    detection run's schedule (``1x``, ``3x_ms``), which picks the config.

    ``length`` counts epochs for epoch-based configs (detection) and iterations for
    iteration-based ones (segmentation); so do ``checkpoint_every`` and ``val_every``.
    """

    length: int | None = None
    batch_per_device: int | None = None
    workers: int | None = None
    image_scale: float = 1.0  # multiplies every image size of the pipelines (smoke runs)
    roi_scale: float = 1.0  # multiplies a two-stage detector's RoI counts (smoke runs; see scale_roi_counts)
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = None  # checkpoints kept in the work dir (mmengine's max_keep_ckpts)
    val_every: int | None = None
    score_thr: float | None = None  # detection test score threshold
    log_every: int | None = None
    log_level: str = "INFO"  # mmengine's console and file log (WARNING: progress bar and curves only)
    scale_lr: bool = True  # lr scaled linearly with the global batch (against the config's recipe batch)
    seed: int = 0
    global_batch: int | None = None  # images per optimizer step (None: see training_batch)


#: The overrides that change a run's speed, checkpoints or logs, never its results: they live in
#: ``<profile>.<task>_speed``, which no stage tracks (as ``<profile>.pretrain_speed``).
SPEED_OVERRIDES = ("workers", "checkpoint_every", "keep_checkpoints", "log_every", "log_level")


def load_overrides(params: str | Path | dict[str, Any], profile: str, task: str) -> Overrides:
    """The :class:`Overrides` of ``task`` (detection, segmentation): ``<profile>.<task>.overrides`` with
    ``<profile>.<task>_speed``; a speed option among the tracked overrides is a one-line error naming its home."""
    data = params if isinstance(params, dict) else load_params(params)
    tracked = profile_section(data, profile, task).get("overrides") or {}
    speed = profile_section(data, profile, f"{task}_speed") or {}
    for where, values, allowed in ((f"{profile}.{task}.overrides", tracked, None), (f"{profile}.{task}_speed", speed, SPEED_OVERRIDES)):
        if not isinstance(values, dict):
            raise SecvitError(f"{where} must be a mapping of settings, got {type(values).__name__}")
        misplaced = sorted(set(values) - set(allowed)) if allowed else sorted(set(values) & set(SPEED_OVERRIDES))
        if misplaced and allowed is None:
            raise SecvitError(f"setting '{where}.{misplaced[0]}' belongs in {profile}.{task}_speed (it changes no result; no stage tracks it there)")
        if misplaced:
            raise SecvitError(f"unknown setting '{where}.{misplaced[0]}'; valid settings: {', '.join(SPEED_OVERRIDES)}")
    return from_section(Overrides, {**tracked, **speed}, f"{profile}.{task}.overrides")


def _walk(node: Any, skip: Any = None) -> Iterator[dict]:
    """Every dict inside a config node (depth first), but none inside ``skip`` (a node of it)."""
    if node is skip:
        return
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value, skip)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value, skip)


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        return [_scaled(v, factor) for v in value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(max(MIN_SIDE, round(v * factor)) for v in value)
    return value


def scale_image_sizes(cfg: Any, factor: float) -> None:
    """Multiply every image size (``scale``, ``scales``, ``crop_size``, ``size``) in ``cfg`` by ``factor``.

    Image sizes live on the data side: the pipelines and the data preprocessors. The rest of the model is
    left alone, where the same keys mean something else (an anchor generator's ``scales`` multiply its
    strides: scaled with the images, Mask R-CNN's RPN anchors grew 4x at the smoke profile's 0.1).
    """
    if factor == 1.0:
        return
    root = cfg._cfg_dict if hasattr(cfg, "_cfg_dict") else cfg
    model = root.get("model", {})
    for node in [*_walk(root, skip=model), *_walk(model.get("data_preprocessor", {}))]:
        for key in SIZE_KEYS:
            if key in node:
                node[key] = _scaled(node[key], factor)


def scale_roi_counts(cfg: Any, factor: float) -> None:
    """Multiply a two-stage detector's RoI counts by ``factor``: the proposals its RPN keeps per image
    (``rpn_proposal`` and ``rpn`` ``max_per_img``), the RoIs its RoI head samples per image in training (each
    cascade stage's ``rcnn`` sampler ``num``) and the detections it keeps per image (``rcnn`` ``max_per_img``).

    Image sizes (:func:`scale_image_sizes`) shrink the backbone's and the FPN's work, not the RoI heads': they
    run once per RoI, 512 per image in training and 1000 in testing at any image size. The RPN's own anchor
    sampler is left alone (it picks loss terms, not work); a one-stage detector has no RoI counts.
    """
    if factor == 1.0:
        return
    root = cfg._cfg_dict if hasattr(cfg, "_cfg_dict") else cfg

    def scale(node: dict, key: str) -> None:
        if key in node:
            node[key] = max(1, round(node[key] * factor))

    train, test = (root.get("model", {}).get(loop) or {} for loop in ("train_cfg", "test_cfg"))
    for node in (train.get("rpn_proposal") or {}, test.get("rpn") or {}, test.get("rcnn") or {}):
        scale(node, "max_per_img")
    rcnn = train.get("rcnn") or []
    for stage in rcnn if isinstance(rcnn, (list, tuple)) else [rcnn]:
        scale(stage.get("sampler") or {}, "num")


def _set_data_root(cfg: Any, root: Path) -> None:
    """Point every dataloader and evaluator at ``root`` (evaluators keep their path below the old root)."""
    old = None
    for name in DATALOADERS:
        dataset = cfg[name]["dataset"]
        old = old or dataset.get("data_root")
        dataset["data_root"] = str(root)
    for name in EVALUATORS:
        ann_file = cfg[name].get("ann_file")
        if ann_file:
            relative = os.path.relpath(ann_file, old) if old else ann_file
            cfg[name]["ann_file"] = str(root / relative)


def _set_classes(cfg: Any, classes: Sequence[str]) -> None:
    """Train on the dataset's own category names (every head sized for the config's classes follows)."""
    old = len(cfg["train_dataloader"]["dataset"].get("metainfo", {}).get("classes", ())) or 80
    for name in DATALOADERS:
        cfg[name]["dataset"]["metainfo"] = dict(classes=tuple(classes))
    for node in _walk(cfg["model"]):
        if node.get("num_classes") == old:
            node["num_classes"] = len(classes)


def _apply_overrides(cfg: Any, s: Overrides) -> None:
    by_epoch = cfg["train_cfg"].get("type", "EpochBasedTrainLoop") == "EpochBasedTrainLoop"
    if s.length is not None:
        cfg["train_cfg"]["max_epochs" if by_epoch else "max_iters"] = s.length
        # the recipe's schedulers, cut at the new length (those starting after it are dropped)
        kept = []
        for sched in cfg["param_scheduler"]:
            if sched.get("by_epoch", True) == by_epoch:
                if sched.get("begin", 0) >= s.length:
                    continue
                sched["end"] = min(sched.get("end", s.length), s.length)
                if "milestones" in sched:
                    sched["milestones"] = [m for m in sched["milestones"] if m < s.length]
            kept.append(sched)
        cfg["param_scheduler"] = kept
    if s.val_every is not None:
        cfg["train_cfg"]["val_interval"] = s.val_every
    if s.checkpoint_every is not None:
        cfg["default_hooks"]["checkpoint"]["interval"] = s.checkpoint_every
    if s.keep_checkpoints is not None:
        cfg["default_hooks"]["checkpoint"]["max_keep_ckpts"] = s.keep_checkpoints
    if s.log_every is not None:
        cfg["default_hooks"]["logger"]["interval"] = s.log_every
        cfg.setdefault("log_processor", {})["window_size"] = s.log_every
    if s.batch_per_device is not None:
        cfg["train_dataloader"]["batch_size"] = s.batch_per_device
    if s.workers is not None:
        for name in DATALOADERS:
            cfg[name]["num_workers"] = s.workers
            cfg[name]["persistent_workers"] = s.workers > 0
    if s.score_thr is not None:
        for node in _walk(cfg["model"].get("test_cfg", {})):
            if "score_thr" in node:
                node["score_thr"] = s.score_thr
    cfg["log_level"] = s.log_level
    scale_image_sizes(cfg, s.image_scale)
    scale_roi_counts(cfg, s.roi_scale)
    cfg["randomness"] = dict(seed=s.seed)


def _set_batch(cfg: Any, s: Overrides, world_size: int) -> None:
    """Resolve the global batch, the per-device batch, gradient accumulation and the lr into ``cfg``.

    The recipe's global batch is the config's ``auto_scale_lr.base_batch_size`` (16: 8 GPUs x 2 images).
    Iteration-based configs (segmentation) keep it on any device count: each device takes at most its
    configured batch, and gradient accumulation makes up the rest, so the run is the recipe's (same images
    per optimizer step, same lr, same number of optimizer steps). Epoch-based configs (detection) train
    ``devices x batch`` images per step with the lr scaled linearly, as mmdet's ``auto_scale_lr`` would.
    ``s.global_batch`` sets another global batch for either (reached by accumulation; lr scaled linearly).
    The lr is written into the config, so mmengine's own ``auto_scale_lr`` is switched off.
    """
    recipe = (cfg.get("auto_scale_lr") or {}).get("base_batch_size")
    if not recipe:
        raise SecvitError("the config states no recipe batch: set auto_scale_lr = dict(enable=False, base_batch_size=N)")
    by_epoch = cfg["train_cfg"].get("type", "EpochBasedTrainLoop") == "EpochBasedTrainLoop"
    per_device = s.batch_per_device or cfg["train_dataloader"]["batch_size"]
    target = s.global_batch or (world_size * per_device if by_epoch else recipe)
    if target % world_size:
        raise SecvitError(
            f"a global batch of {target} cannot be split over {world_size} devices; use a device count that divides it "
            "or set the overrides' global_batch"
        )
    share = target // world_size
    per_device = max(b for b in range(1, min(per_device, share) + 1) if share % b == 0)
    accumulation = share // per_device
    cfg["train_dataloader"]["batch_size"] = per_device
    optimizer = cfg["optim_wrapper"]["optimizer"]
    if s.scale_lr:
        optimizer["lr"] = optimizer["lr"] * target / recipe
    cfg["auto_scale_lr"]["enable"] = False  # the lr above is already that of the global batch
    if accumulation > 1:
        cfg["optim_wrapper"]["accumulative_counts"] = accumulation
        _stretch_iterations(cfg, accumulation, by_epoch)


def _stretch_iterations(cfg: Any, factor: int, by_epoch: bool) -> None:
    """Count every iteration-based length in micro-batches: ``factor`` loop iterations make one optimizer step."""
    for sched in cfg["param_scheduler"]:
        if not sched.get("by_epoch", True):
            for key in ("begin", "end"):
                if key in sched:
                    sched[key] *= factor
    if by_epoch:
        return
    cfg["train_cfg"]["max_iters"] *= factor
    cfg["train_cfg"]["val_interval"] = cfg["train_cfg"].get("val_interval", 1000) * factor
    hooks = cfg["default_hooks"]
    hooks["checkpoint"]["interval"] *= factor
    hooks["logger"]["interval"] *= factor


def training_batch(cfg: Any, world_size: int) -> dict[str, Any]:
    """The global batch, its split and the lr of a prepared config (recorded in metrics.json)."""
    accumulation = cfg["optim_wrapper"].get("accumulative_counts", 1)
    per_device = cfg["train_dataloader"]["batch_size"]
    return {
        "global_batch": world_size * per_device * accumulation, "batch_per_device": per_device,
        "accumulation": accumulation, "lr": cfg["optim_wrapper"]["optimizer"]["lr"],
    }


def prepare_config(
    config: str | Path,
    *,
    work_dir: str | Path,
    data_root: str | Path,
    pretrained: str | Path | None,
    overrides: Overrides | None = None,
    classes: Sequence[str] | None = None,
    model: str | None = None,
    world_size: int | None = None,
) -> Any:
    """The config at ``config`` pointed at a dataset, a work dir and backbone weights.

    ``model`` runs the config's recipe with that backbone instead of its own. The global batch is split over
    ``world_size`` devices (default: the launcher's world size, else 1; see :func:`_set_batch`).
    """
    from mmengine.config import Config  # heavy: mmengine, loaded to read a config

    path = Path(config)
    if not path.is_file():
        raise SecvitError(f"config {path} does not exist")
    cfg = Config.fromfile(str(path))
    cfg.work_dir = str(work_dir)
    cfg.resume = True  # continue from the work dir's latest checkpoint, if any
    cfg.load_from = latest_checkpoint(work_dir)
    if model is not None:
        swap_backbone(cfg, model)
    cfg.model.backbone.pretrained = None if pretrained is None else str(pretrained)
    _set_data_root(cfg, Path(data_root))
    if classes is not None:
        _set_classes(cfg, classes)
    overrides = overrides or Overrides()
    _apply_overrides(cfg, overrides)
    _set_batch(cfg, overrides, world_size or launched_world_size() or 1)
    distributed = (launched_world_size() or 1) > 1
    cfg.launcher = "pytorch" if distributed else "none"
    if not torch.cuda.is_available():
        cfg.env_cfg.dist_cfg = dict(backend="gloo")
        if distributed:  # mmengine's DDP wrapper passes GPU device ids; see train_and_test() for its init_dist
            cfg.model_wrapper_cfg = dict(
                type="CpuDistributedDataParallel", broadcast_buffers=False, find_unused_parameters=cfg.get("find_unused_parameters", False)
            )
    if cfg["train_cfg"].get("type", "EpochBasedTrainLoop") == "EpochBasedTrainLoop":
        cfg["train_cfg"]["type"] = "ResumableEpochBasedTrainLoop"  # resumes inside an epoch (secvit.downstream.hooks)
    cfg.custom_hooks = [
        *cfg.get("custom_hooks", []), dict(type="SafeResumeHook"), dict(type="RichProgressHook"), dict(type="StopOnSignalHook")
    ]
    return cfg


# ---------------------------------------------------------------------------- another backbone


def _stage_channels(model_name: str) -> list[int]:
    return [info["num_chs"] for info in create(model_name).feature_info]


def swap_backbone(cfg: Any, model_name: str) -> None:
    """Run ``cfg``'s recipe with another registered backbone (its channels and default drop path)."""
    backbone = cfg["model"]["backbone"]
    if backbone["model_name"] == model_name:
        return
    indices = list(backbone.get("out_indices", (0, 1, 2, 3)))
    old, new = _stage_channels(backbone["model_name"]), _stage_channels(model_name)
    old_sel, new_sel = [old[i] for i in indices], [new[i] for i in indices]
    for name in ("neck", "decode_head", "auxiliary_head"):
        part = cfg["model"].get(name)
        if not part:
            continue
        channels = part.get("in_channels")
        if isinstance(channels, (list, tuple)) and list(channels) == old_sel:
            part["in_channels"] = new_sel
        elif isinstance(channels, int) and isinstance(part.get("in_index"), int):
            part["in_channels"] = new_sel[part["in_index"]]
    backbone["model_name"] = model_name
    backbone["drop_path_rate"] = None  # the model's own default
