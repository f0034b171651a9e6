"""Model commands: complexity, convert, list-models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from secvit.cli.common import AllowCpuOpt, DeviceOpt, ParamsOpt, console, user_errors
from secvit.cli.train import ExecutorOpt
from secvit.errors import SecvitError


def complexity(
    model: Annotated[str | None, typer.Argument(help="Registered model name, e.g. secvit_small.")] = None,
    img_size: Annotated[int, typer.Option(help="Square input size.")] = 224,
    ablation: Annotated[str | None, typer.Option(help="Table-6 ablation of a SecViT model, e.g. no_lce.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    profile: Annotated[str | None, typer.Option(help="Stage mode: measure every model of this profile.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    executor: ExecutorOpt = None,
    device: DeviceOpt = None,
    allow_cpu: AllowCpuOpt = False,
) -> None:
    """Parameters and FLOPs (fvcore) at 1x3xSxS of MODEL, or (--profile) the complexity stage."""
    from secvit.complexity import measure
    from secvit.device import allow_cpu as opt_in_cpu
    from secvit.orchestrate.env import executor_choice
    from secvit.orchestrate.slurm import submit_and_wait

    opt_in_cpu(allow_cpu)
    if executor_choice(executor) == "slurm" and (profile is not None or executor is not None):  # $SECVIT_EXECUTOR: stages only
        if profile is None:
            raise SecvitError("--executor slurm runs the complexity stage only; add --profile smoke|paper")
        submit_and_wait("complexity", {"profile": profile, "params": params, "device": device})
        return
    if profile is not None:
        from secvit.pipelines.complexity import complexity_stage

        console.print(f"wrote {complexity_stage(profile, params, device)}")
        return
    if model is None:
        raise SecvitError("give a MODEL (e.g. secvit_small) or --profile smoke|paper")
    from secvit.models.variants import ablation_options

    result = measure(model, img_size, **ablation_options(ablation, model))
    if json_out:
        print(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{model}{f' ({ablation})' if ablation else ''} at {img_size}x{img_size}")
    for col in ("params", "GFLOPs (all ops)", "GFLOPs (no attention matmuls, paper)"):
        table.add_column(col, justify="right")
    table.add_row(f"{result.params:,}", f"{result.gflops:.2f}", f"{result.gflops_no_attn:.2f}")
    console.print(table)


def convert(
    src: Annotated[Path, typer.Argument(help="Released checkpoint (.pth).")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    model: Annotated[str, typer.Option(help="Model the checkpoint belongs to.")],
    ema: Annotated[bool, typer.Option("--ema", help="Take the EMA weights ('model_ema').")] = False,
) -> None:
    """Convert a released SecViT checkpoint into a safetensors file of this project's layout."""
    from secvit.checkpoint import convert as run

    count = run(src, dst, model, ema=ema)
    console.print(f"wrote {dst} ({count} tensors, {'EMA' if ema else 'raw'} weights of {model})")


def list_models() -> None:
    """List the registered backbones."""
    from secvit.models import available_models

    for name in available_models():
        print(name)


def register(app: typer.Typer) -> None:
    for func in (complexity, convert, list_models):
        app.command(name=func.__name__.replace("_", "-"))(user_errors(func))
