"""Dense-prediction commands: detect (COCO, mmdet), segment (ADE20K, mmseg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from secvit.cli.common import AllowCpuOpt, DeviceOpt, ParamsOpt, ProfileOpt, user_errors
from secvit.cli.train import ExecutorOpt

ModelOpt = Annotated[str, typer.Option(help="Backbone, e.g. secvit_small (any model of `secvit list-models`).")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(help="Backbone ImageNet weights: a checkpoint file, ours by default (runs/<profile>/pretrain/<model>/best.pth); "
                 "released:<model>: the profile's released file (params.yaml released.checkpoints), a run of the released lane."),
]


def detect(
    model: ModelOpt,
    detector: Annotated[str, typer.Option(help="mask_rcnn, cascade_mask_rcnn or retinanet.")],
    schedule: Annotated[str, typer.Option(help="1x (12 epochs, single scale) or 3x_ms (36 epochs, multi-scale).")],
    profile: ProfileOpt = "smoke",
    params: ParamsOpt = Path("params.yaml"),
    weights: WeightsOpt = None,
    executor: ExecutorOpt = None,
    device: DeviceOpt = None,
    allow_cpu: AllowCpuOpt = False,
) -> None:
    """Train and evaluate a COCO detector with a SecViT backbone (paper tables 3 and 4).

    Checkpoints go to runs/<profile>/detection/<model>-<detector>-<schedule>/ (a rerun resumes there);
    box/mask AP, params and FLOPs to results/<profile>/detection/<...>/metrics.json.
    """
    from secvit.device import allow_cpu as opt_in_cpu
    from secvit.pipelines.downstream import detect_stage
    from secvit.orchestrate.launch import launch_stage

    opt_in_cpu(allow_cpu)
    result = launch_stage(
        "detect", detect_stage, executor, profile=profile, model=model, detector=detector, schedule=schedule, weights=weights, params=params,
        device=device,
    )
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


def segment(
    model: ModelOpt,
    head: Annotated[str, typer.Option(help="semantic_fpn (80k iterations) or upernet (160k iterations).")],
    profile: ProfileOpt = "smoke",
    params: ParamsOpt = Path("params.yaml"),
    weights: WeightsOpt = None,
    executor: ExecutorOpt = None,
    device: DeviceOpt = None,
    allow_cpu: AllowCpuOpt = False,
) -> None:
    """Train and evaluate an ADE20K segmentor with a SecViT backbone (paper table 5).

    Checkpoints go to runs/<profile>/segmentation/<model>-<head>/ (a rerun resumes there);
    mIoU, params and FLOPs to results/<profile>/segmentation/<model>-<head>/metrics.json.
    """
    from secvit.device import allow_cpu as opt_in_cpu
    from secvit.pipelines.downstream import segment_stage
    from secvit.orchestrate.launch import launch_stage

    opt_in_cpu(allow_cpu)
    result = launch_stage(
        "segment", segment_stage, executor, profile=profile, model=model, head=head, weights=weights, params=params, device=device
    )
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    for func in (detect, segment):
        app.command(name=func.__name__)(user_errors(func))
