"""Stages: COCO detection / instance segmentation (mmdet) and ADE20K semantic segmentation (mmseg).

One run trains a config of ``pipelines/configs`` with one backbone, evaluates it and writes
``results/<profile>/<task>/<key>/metrics.json`` (keys as :mod:`secvit.tables.results` reads
them) with DVCLive curves beside it; checkpoints stay in ``runs/<profile>/<task>/<key>/``. A backbone from
the profile's released checkpoint (``--weights released:<model>``, hash-checked) is the released lane's run:
its folders are ``runs|results/<profile>/released/<task>/<key>/``, beside our pretraining's run of the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secvit.atomic import write_json
from secvit.data.layout import ADE_DIR
from secvit.device import require_device
from secvit.downstream.complexity import model_complexity
from secvit.downstream.config import (
    CONFIGS,
    DETECTION_CONFIGS,
    SEGMENTATION_CONFIGS,
    DownstreamSettings,
    coco_classes,
    config_file,
    load_overrides,
    prepare_config,
    training_batch,
)
from secvit.downstream.datasets import leave_out
from secvit.downstream.metrics import curve_rows, detection_summary, raw_metrics, segmentation_summary
from secvit.downstream.runner import finish_checkpoints, latest_checkpoint, train_and_test
from secvit.engine.live import write_curves
from secvit.errors import SecvitError
from secvit.params import load_section
from secvit.provenance import code_version
from secvit.data.inputs import stage_data
from secvit.released import released_file, released_model
from secvit.runs import BEST, CURVES, DETECTION, METRICS, OURS, RELEASED, SEGMENTATION, downstream_key, lane_task, results_dir, run_dir


def _weights(profile: str, model: str, weights: Path | str | None, params: Path) -> tuple[Path, str, dict[str, Any]]:
    """The backbone's weights file, its lane and what the metrics record of it."""
    named = released_model(None if weights is None else str(weights))
    if named is not None:
        if named != model:
            raise SecvitError(f"--weights {weights} is a {named} checkpoint; the backbone is {model}: use released:{model}")
        path, sha = released_file(params, profile, model)
        return path, RELEASED, {"lane": RELEASED, "weights": str(path), "weights_sha256": sha}
    path = Path(weights) if weights is not None else run_dir(profile, model) / BEST
    if not path.is_file():
        raise SecvitError(
            f"no backbone weights at {path}; run `secvit pretrain --profile {profile} --model {model}` first "
            "or pass --weights with a released checkpoint"
        )
    return path, OURS, {"lane": OURS, "weights": str(path)}


def _run(
    task: str, profile: str, model: str, setting: tuple[str, ...], pattern: str, params: Path, weights: Path | str | None,
    data_root: Path, classes: list[str] | None, summary, left_out: list[str],
) -> dict[str, Any]:
    from mmengine.dist import get_rank, get_world_size  # heavy: mmengine, loaded by the dense stages only

    settings = load_section(params, profile, task, DownstreamSettings)
    overrides = load_overrides(params, profile, task)
    config, swapped = config_file(pattern, model)
    key = downstream_key(model, *setting)
    pretrained, lane, source = _weights(profile, model, weights, params)
    work_dir = run_dir(profile, key, lane_task(task, lane))
    results = results_dir(profile, key, lane_task(task, lane))
    cfg = prepare_config(
        config, work_dir=work_dir, data_root=data_root, pretrained=pretrained,
        overrides=overrides, classes=classes, model=model if swapped else None,
    )
    leave_out(cfg, left_out)  # the images the data stage found bad
    raw = train_and_test(cfg)
    ms_flip = summary(_test_ms_flip(cfg)) if settings.ms_flip else {}
    if get_rank() != 0:
        return {}
    metrics = {
        **summary(raw),
        **model_complexity(cfg, *settings.size_for(model)),
        "config": str(config.relative_to(CONFIGS.parent.parent)),
        "backbone": model,
        "backbone_swapped_in": swapped,
        **source,
        "world_size": get_world_size(),
        **training_batch(cfg, get_world_size()),  # global_batch, batch_per_device, accumulation, lr
        **{f"{k}_ms_flip": v for k, v in ms_flip.items()},
        "raw": raw_metrics(raw),
        "left_out_images": len(left_out),
        "code": code_version(),
    }
    write_json(results / METRICS, metrics)
    names = {"loss": "train/loss", "lr": "train/lr", **{raw_key: f"val/{raw_key.split('/')[-1]}" for raw_key in raw}}
    write_curves(results / CURVES, curve_rows(work_dir), names, "step")
    finish_checkpoints(work_dir)
    return metrics


def _test_ms_flip(cfg: Any) -> dict[str, float]:
    """Multi-scale + flip test of the trained model (mmseg's TTA pipeline of the config)."""
    from mmengine.runner import Runner  # heavy: mmengine, loaded by the dense stages only

    tta = cfg.copy()
    tta.test_dataloader.dataset.pipeline = tta.tta_pipeline
    tta.tta_model.module = tta.model
    tta.model = tta.tta_model
    tta.load_from = latest_checkpoint(cfg.work_dir)
    tta.resume = False
    tta.work_dir = str(Path(cfg.work_dir) / "ms_flip")
    return dict(Runner.from_cfg(tta).test())


def detect_stage(
    profile: str, model: str, detector: str, schedule: str, params: Path, weights: Path | str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Train and evaluate one detector with one backbone on COCO."""
    require_device("detect", profile, params, device, mmcv_ops=True)

    pattern = DETECTION_CONFIGS.get((detector, schedule))
    if pattern is None:
        known = ", ".join(f"{d} {s}" for d, s in DETECTION_CONFIGS)
        raise SecvitError(f"no detection setting {detector} {schedule}; choose one of: {known}")
    coco = stage_data(profile, params, "coco")  # checked, and verified by the data stage
    return _run(
        DETECTION, profile, model, (detector, schedule), pattern, params, weights, coco.root, coco_classes(coco.root), detection_summary,
        coco.bad_paths(),
    )


def segment_stage(
    profile: str, model: str, head: str, params: Path, weights: Path | str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Train and evaluate one segmentor with one backbone on ADE20K."""
    require_device("segment", profile, params, device, mmcv_ops=True)

    pattern = SEGMENTATION_CONFIGS.get(head)
    if pattern is None:
        raise SecvitError(f"no segmentation head {head!r}; choose one of: {', '.join(SEGMENTATION_CONFIGS)}")
    ade20k = stage_data(profile, params, "ade20k")  # checked, and verified by the data stage
    return _run(
        SEGMENTATION, profile, model, (head,), pattern, params, weights, ade20k.root / ADE_DIR, None, segmentation_summary, ade20k.bad_paths()
    )
