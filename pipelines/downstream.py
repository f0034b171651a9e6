"""Stages: COCO detection / instance segmentation (mmdet) and ADE20K semantic segmentation (mmseg).

One run trains a config of ``pipelines/configs`` with one backbone, evaluates it and writes
``results/<profile>/<task>/<key>/metrics.json`` (keys as :mod:`secvit.tables.results` reads
them) with DVCLive curves beside it; checkpoints stay in ``runs/<profile>/<task>/<key>/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secvit.pipelines.settings import data_config, load
from secvit.downstream.run import Overrides
from secvit.errors import SecvitError
from secvit.params import from_section
from secvit.runs import BEST, CURVES, DETECTION, METRICS, SEGMENTATION, downstream_key, results_dir, run_dir

CONFIGS = Path(__file__).parent / "configs"

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


@dataclass
class DownstreamSettings:
    """``<profile>.detection`` / ``<profile>.segmentation`` of params.yaml."""

    overrides: dict[str, Any]  # of the config's schedule and sizes (secvit.downstream.run.Overrides)
    flops_size: dict[str, list[int]]  # (height, width) per backbone; "default" for the others
    ms_flip: bool = False  # segmentation: also test multi-scale with flip

    def size_for(self, model: str) -> tuple[int, int]:
        height, width = self.flops_size.get(model, self.flops_size["default"])
        return int(height), int(width)


def config_file(pattern: str, model: str) -> tuple[Path, bool]:
    """The config for ``model`` from a name ``pattern``; (path, True) when the backbone must be swapped in."""
    own = CONFIGS / pattern.format(model=model.replace("_", "-"))
    if own.is_file():
        return own, False
    candidates = sorted(CONFIGS.glob(pattern.format(model="*")))
    if not candidates:
        raise SecvitError(f"no config matches {CONFIGS / pattern.format(model='*')}")
    return candidates[0], True


def _weights(profile: str, model: str, weights: Path | None) -> Path:
    path = weights or run_dir(profile, model) / BEST
    if not path.is_file():
        raise SecvitError(
            f"no backbone weights at {path}; run `secvit pretrain --profile {profile} --model {model}` first "
            "or pass --weights with a released checkpoint"
        )
    return path


def _coco_classes(root: Path) -> list[str]:
    """Category names of the COCO-layout dataset, in id order (the detector's class order)."""
    with open(root / "annotations" / "instances_val2017.json", "rb") as f:
        categories = json.load(f)["categories"]
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def _run(
    task: str, profile: str, model: str, setting: tuple[str, ...], pattern: str, params: Path, weights: Path | None,
    data_root: Path, classes: list[str] | None, summary,
) -> dict[str, Any]:
    from mmengine.dist import get_rank, get_world_size

    from secvit.atomic import write_json
    from secvit.downstream.run import curve_rows, finish_checkpoints, model_complexity, prepare_config, run, training_batch
    from secvit.engine.live import write_curves

    settings = load(params, profile, task, DownstreamSettings)
    overrides = from_section(Overrides, settings.overrides, f"{profile}.{task}.overrides")
    config, swapped = config_file(pattern, model)
    key = downstream_key(model, *setting)
    work_dir = run_dir(profile, key, task)
    results = results_dir(profile, key, task)
    cfg = prepare_config(
        config, work_dir=work_dir, data_root=data_root, pretrained=_weights(profile, model, weights),
        overrides=overrides, classes=classes, model=model if swapped else None,
    )
    raw = run(cfg)
    ms_flip = summary(_test_ms_flip(cfg)) if settings.ms_flip else {}
    if get_rank() != 0:
        return {}
    metrics = {
        **summary(raw),
        **model_complexity(cfg, *settings.size_for(model)),
        "config": str(config.relative_to(CONFIGS.parent.parent)),
        "backbone": model,
        "backbone_swapped_in": swapped,
        "world_size": get_world_size(),
        **training_batch(cfg, get_world_size()),  # global_batch, batch_per_device, accumulation, lr
        **{f"{k}_ms_flip": v for k, v in ms_flip.items()},
        "raw": {k: v for k, v in raw.items() if isinstance(v, (int, float))},
    }
    write_json(results / METRICS, metrics)
    names = {"loss": "train/loss", "lr": "train/lr", **{raw_key: f"val/{raw_key.split('/')[-1]}" for raw_key in raw}}
    write_curves(results / CURVES, curve_rows(work_dir), names, "step")
    finish_checkpoints(work_dir)
    return metrics


def _test_ms_flip(cfg: Any) -> dict[str, float]:
    """Multi-scale + flip test of the trained model (mmseg's TTA pipeline of the config)."""
    from mmengine.runner import Runner

    from secvit.downstream.run import latest_checkpoint

    tta = cfg.copy()
    tta.test_dataloader.dataset.pipeline = tta.tta_pipeline
    tta.tta_model.module = tta.model
    tta.model = tta.tta_model
    tta.load_from = latest_checkpoint(cfg.work_dir)
    tta.resume = False
    tta.work_dir = str(Path(cfg.work_dir) / "ms_flip")
    return dict(Runner.from_cfg(tta).test())


def detect_stage(
    profile: str, model: str, detector: str, schedule: str, params: Path, weights: Path | None = None, device: str | None = None
) -> dict[str, Any]:
    """Train and evaluate one detector with one backbone on COCO."""
    from secvit.data.layout import check_coco
    from secvit.downstream.run import detection_summary
    from secvit.gpu import require_device

    require_device("detect", profile, params, device, mmcv_ops=True)

    pattern = DETECTION_CONFIGS.get((detector, schedule))
    if pattern is None:
        known = ", ".join(f"{d} {s}" for d, s in DETECTION_CONFIGS)
        raise SecvitError(f"no detection setting {detector} {schedule}; choose one of: {known}")
    data = data_config(params, profile)
    root = data.root("coco")
    check_coco(root, data.expected_for("coco"))
    return _run(DETECTION, profile, model, (detector, schedule), pattern, params, weights, root, _coco_classes(root), detection_summary)


def segment_stage(
    profile: str, model: str, head: str, params: Path, weights: Path | None = None, device: str | None = None
) -> dict[str, Any]:
    """Train and evaluate one segmentor with one backbone on ADE20K."""
    from secvit.data.layout import ADE_DIR, check_ade20k
    from secvit.downstream.run import segmentation_summary
    from secvit.gpu import require_device

    require_device("segment", profile, params, device, mmcv_ops=True)

    pattern = SEGMENTATION_CONFIGS.get(head)
    if pattern is None:
        raise SecvitError(f"no segmentation head {head!r}; choose one of: {', '.join(SEGMENTATION_CONFIGS)}")
    data = data_config(params, profile)
    root = data.root("ade20k")
    check_ade20k(root, data.expected_for("ade20k"))
    return _run(SEGMENTATION, profile, model, (head,), pattern, params, weights, root / ADE_DIR, None, segmentation_summary)
