"""Train and evaluate an OpenMMLab config (mmdet or mmseg) with mmengine's Runner.

The configs under ``pipelines/configs`` are complete recipes that stock tools run as they are.
:func:`prepare_config` only points one at a dataset, a work directory and backbone weights, and
applies the few size knobs of a :class:`Overrides` (the smoke profile shrinks runs with them).
:func:`run` trains (resuming from the work directory), tests, and returns the test metrics.
"""

from __future__ import annotations

import copy
import json
import os
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secvit.engine.distributed import launched_world_size
from secvit.errors import SecvitError

__all__ = [
    "Overrides", "prepare_config", "training_batch", "swap_backbone", "latest_checkpoint", "finish_checkpoints", "run",
    "model_complexity", "curve_rows",
    "detection_summary", "segmentation_summary",
]

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
    from mmengine.config import Config

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
        if distributed:  # mmengine's DDP wrapper passes GPU device ids; see run() for its init_dist
            cfg.model_wrapper_cfg = dict(
                type="CpuDistributedDataParallel", broadcast_buffers=False, find_unused_parameters=cfg.get("find_unused_parameters", False)
            )
    if cfg["train_cfg"].get("type", "EpochBasedTrainLoop") == "EpochBasedTrainLoop":
        cfg["train_cfg"]["type"] = "ResumableEpochBasedTrainLoop"  # resumes inside an epoch (secvit.downstream.hooks)
    cfg.custom_hooks = [
        *cfg.get("custom_hooks", []), dict(type="SafeResumeHook"), dict(type="RichProgressHook"), dict(type="StopOnSignalHook")
    ]
    return cfg


def _checkpoints(work_dir: str | Path) -> list[tuple[str, int, str]]:
    """``(kind, number, path)`` of the work dir's ``epoch_N.pth`` / ``iter_N.pth`` checkpoints."""
    found = []
    for path in Path(work_dir).glob("*.pth"):
        kind, _, number = path.stem.partition("_")
        if kind in ("epoch", "iter") and number.isdigit():
            found.append((kind, int(number), str(path)))
    return found


def latest_checkpoint(work_dir: str | Path) -> str | None:
    """The work dir's checkpoint of the furthest epoch or iteration (``epoch_N.pth`` / ``iter_N.pth``).

    Checkpoints are renamed into place whole, so any of them is complete; mmengine's own pointer file
    (``last_checkpoint``) is written after the checkpoint and would miss one a kill fell between.
    """
    found = _checkpoints(work_dir)
    if len({kind for kind, _, _ in found}) > 1:  # an epoch-based run stopped mid-epoch: compare iterations done
        from secvit.downstream.hooks import load_own_checkpoint

        found = [("iter", load_own_checkpoint(path, mmap=True)["meta"]["iter"], path) for _, _, path in found]
    return max(found)[2] if found else None


def finish_checkpoints(work_dir: str | Path) -> None:
    """After a finished run (trained and tested), its work directory keeps one checkpoint, the latest,
    with the weights and position only: resuming needs no optimizer or scheduler state once nothing is
    left to train (AdamW's two moments are two thirds of a checkpoint), and no earlier checkpoint."""
    from secvit.checkpoint import atomic_save
    from secvit.downstream.hooks import load_own_checkpoint

    latest = latest_checkpoint(work_dir)
    if latest is None:
        return
    checkpoint = load_own_checkpoint(latest)
    if "optimizer" in checkpoint or "param_schedulers" in checkpoint:
        checkpoint.pop("optimizer", None)
        checkpoint.pop("param_schedulers", None)
        atomic_save(checkpoint, latest)
    for _, _, path in _checkpoints(work_dir):
        if path != latest:
            Path(path).unlink()


def _test_is_validation(cfg: Any) -> bool:
    """Whether the config tests on its validation split with its validation metric (COCO val2017, ADE20K validation)."""
    return cfg.get("test_dataloader") == cfg.get("val_dataloader") and cfg.get("test_evaluator") == cfg.get("val_evaluator")


def run(cfg: Any) -> dict[str, float]:
    """Train ``cfg`` (resuming from its work dir), then test the final model; the test metrics.

    mmengine's train loops validate after the last epoch or iteration. Where the test is that validation
    (same split, same metric), its metrics are the test's, and the model is not evaluated twice; a run
    resumed after its training ended tests again.
    """
    from mmengine.runner import Runner

    import secvit.downstream.backbone  # noqa: F401  (registers the backbone, hooks and file backend)
    from secvit.downstream.hooks import FinalValidationHook

    _require_compiled_ops()
    if cfg.launcher == "pytorch" and not torch.cuda.is_available():
        import torch.distributed as dist

        if not dist.is_initialized():  # mmengine's init_dist selects a GPU first; it skips a joined group
            dist.init_process_group("gloo")
    runner = Runner.from_cfg(cfg)
    final = FinalValidationHook()
    runner.register_hook(final)
    runner.train()
    if final.metrics is not None and final.iteration == runner.iter and _test_is_validation(cfg):
        return final.metrics
    return dict(runner.test())


def _require_compiled_ops() -> None:
    try:
        from mmcv.ops import nms  # noqa: F401
    except (ImportError, OSError) as e:
        raise SecvitError(
            f"mmcv has no compiled ops ({str(e).splitlines()[0][:80]}); rebuild it with scripts/build_mmcv.sh "
            "(MMCV_WITH_OPS=1) and reinstall the environment with scripts/env.sh"
        ) from None


# ---------------------------------------------------------------------------- summaries

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


def segmentation_summary(raw: dict[str, float]) -> dict[str, float]:
    """mIoU, mAcc and aAcc in percent (mmseg's IoUMetric reports percent already)."""
    return {ours: round(float(raw[key]), 2) for ours, key in _ADE.items() if key in raw}


# ---------------------------------------------------------------------------- complexity


class _TensorForward(nn.Module):
    """The model's ``mode='tensor'`` forward on a bare image batch (data samples built inside)."""

    def __init__(self, model: nn.Module, sample_cls: type | None, height: int, width: int) -> None:
        super().__init__()
        self.model, self.sample_cls, self.shape = model, sample_cls, (height, width)

    def forward(self, x: torch.Tensor) -> Any:
        samples = None
        if self.sample_cls is not None:
            meta = dict(img_shape=self.shape, ori_shape=self.shape, pad_shape=self.shape,
                        batch_input_shape=self.shape, scale_factor=(1.0, 1.0))
            samples = [self.sample_cls(metainfo=meta) for _ in range(x.shape[0])]
        return self.model(x, samples, mode="tensor")


#: Detections whose masks a FLOP count includes: mmdet's StandardRoIHead.forward (Mask R-CNN) masks the first
#: 100 proposals, as mmdet 2's ``forward_dummy`` did for every RoI head (the paper's counts come from it).
MASKED_ROIS = 100
#: Proposals whose boxes a FLOP count includes: the RPN's 1000 per image of mmdet's test settings, whatever a
#: run's ``roi_scale`` sets (the complexity figures stay the paper's convention in every profile).
COUNTED_PROPOSALS = 1000


def _cascade_tensor_forward(self: Any, x: tuple, rpn_results_list: list, batch_data_samples: list | None = None) -> tuple:
    """Cascade Mask R-CNN's RoI head counted as mmdet 2's ``forward_dummy`` did: every stage's box head on the
    proposals, every stage's mask head on the first :data:`MASKED_ROIS`: 737 GFLOPs for SecViT-S at 1280x800, the
    paper's 738. (mmdet 3's ``CascadeRoIHead.forward`` runs the three mask heads on all 1000 proposals: about 3x that.)"""
    from mmdet.structures.bbox import bbox2roi

    rois = bbox2roi([r.bboxes for r in rpn_results_list])
    outs: tuple = ()
    for stage in range(self.num_stages):
        boxes = self._bbox_forward(stage, x, rois)
        outs += (boxes["cls_score"], boxes["bbox_pred"])
    if self.with_mask:
        for stage in range(self.num_stages):
            outs += (self._mask_forward(stage, x, rois[:MASKED_ROIS])["mask_preds"],)
    return outs


def model_complexity(cfg: Any, height: int, width: int) -> dict[str, Any]:
    """Params and FLOPs of the whole detector / segmentor of ``cfg`` on one ``height x width`` image.

    FLOPs follow :mod:`secvit.complexity` (fvcore: one multiply-add = one FLOP); ``gflops`` leaves out
    the attention matmuls as the paper's convention does, ``gflops_all_ops`` counts them.
    """
    from mmengine.registry import MODELS, init_default_scope

    import secvit.downstream.backbone  # noqa: F401
    from secvit.complexity import count_flops

    init_default_scope(cfg.get("default_scope", "mmdet"))
    model_cfg = copy.deepcopy(cfg.model)
    if (model_cfg.get("test_cfg") or {}).get("rpn"):
        model_cfg.test_cfg.rpn.max_per_img = COUNTED_PROPOSALS
    with torch.random.fork_rng(devices=[]):
        model = MODELS.build(model_cfg).eval()  # with the config's backbone weights (a file it checks)
    params = sum(p.numel() for p in model.parameters())
    sample_cls = None
    if cfg.get("default_scope") == "mmdet":
        from mmdet.models.roi_heads import CascadeRoIHead
        from mmdet.structures import DetDataSample as sample_cls

        if isinstance(getattr(model, "roi_head", None), CascadeRoIHead):
            model.roi_head.forward = types.MethodType(_cascade_tensor_forward, model.roi_head)
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        flops, flops_no_attn = count_flops(_TensorForward(model, sample_cls, height, width), x)
    return {
        "params": params,
        "params_m": round(params / 1e6, 2),
        "gflops": round(flops_no_attn / 1e9, 1),
        "gflops_all_ops": round(flops / 1e9, 1),
        "flops_input": f"{height}x{width}",
    }


# ---------------------------------------------------------------------------- curves


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


# ---------------------------------------------------------------------------- another backbone


def _stage_channels(model_name: str) -> list[int]:
    from secvit.models.registry import create

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
