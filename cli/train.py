"""Training commands: pretrain, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from secvit.cli.common import AllowCpuOpt, DeviceOpt, ParamsOpt, ProfileOpt, console, user_errors

ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        help="local: run here (one DDP process per visible GPU); slurm: run as a SLURM job (slurm section of "
        "params.yaml) and wait for it. Default: $SECVIT_EXECUTOR, else local.",
        show_default=False,
    ),
]


def pretrain(
    model: Annotated[
        str | None,
        typer.Option(help="Backbone to train, e.g. secvit_tiny (default: sweep.model with --clusters, ablations.model with --ablation)."),
    ] = None,
    profile: ProfileOpt = "smoke",
    params: ParamsOpt = Path("params.yaml"),
    clusters: Annotated[str | None, typer.Option(help="Clusters per stage, e.g. 64-16-4-1 (table 7 sweep).")] = None,
    ablation: Annotated[
        str | None, typer.Option(help="Table-6 ablation, e.g. no_lce (default model with it: ablations.model).")
    ] = None,
    executor: ExecutorOpt = None,
    device: DeviceOpt = None,
    allow_cpu: AllowCpuOpt = False,
) -> None:
    """Train a backbone on ImageNet-1K with the paper's recipe (<profile>.pretrain).

    Checkpoints go to runs/<profile>/pretrain/<run>/ and training resumes from last.pth there;
    metrics and curves go to results/<profile>/pretrain/<run>/.
    """
    from secvit.device import allow_cpu as opt_in_cpu
    from secvit.orchestrate.launch import launch_stage
    from secvit.pipelines.pretrain import pretrain_stage

    opt_in_cpu(allow_cpu)
    metrics = launch_stage(
        "pretrain", pretrain_stage, executor, profile=profile, model=model, clusters=clusters, ablation=ablation, params=params, device=device
    )
    if metrics is not None:
        console.print(f"best top-1 {metrics['best_top1']:.2f} ({metrics['best_weights']} weights, epoch {metrics['best_epoch']})")


def evaluate(
    model: Annotated[str, typer.Option(help="Backbone, e.g. secvit_small.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint: released .pth, ours (e.g. the run's last.pth), or .safetensors (default: the run's best.pth); "
                     "released:<model> is the profile's released file (params.yaml released.checkpoints, hash-checked)."),
    ] = None,
    profile: ProfileOpt = "smoke",
    params: ParamsOpt = Path("params.yaml"),
    data: Annotated[Path | None, typer.Option(help="ImageNet root (default: <profile>.data.imagenet).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the metrics JSON here too.")] = None,
    executor: ExecutorOpt = None,
    device: DeviceOpt = None,
    allow_cpu: AllowCpuOpt = False,
) -> None:
    """Top-1/top-5 of a checkpoint on the validation split.

    By default the run's best.pth (runs/<profile>/pretrain/<model>/): the best epoch's better
    weights, raw or EMA, i.e. the number the paper reports; the result goes to
    results/<profile>/pretrain/<model>/eval.json too. A checkpoint holding raw and EMA weights
    (last.pth, released files) is evaluated with both.
    """
    from secvit.device import allow_cpu as opt_in_cpu
    from secvit.pipelines.evaluate import evaluate_stage
    from secvit.orchestrate.launch import launch_stage

    opt_in_cpu(allow_cpu)
    result = launch_stage(
        "evaluate", evaluate_stage, executor, profile=profile, model=model, checkpoint=checkpoint, data=data, out=out, params=params, device=device
    )
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    for func in (pretrain, evaluate):
        app.command(name=func.__name__)(user_errors(func))
