"""Model commands: complexity, convert, list-models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, user_errors


def complexity(
    model: Annotated[str, typer.Argument(help="Registered model name, e.g. secvit_small.")],
    img_size: Annotated[int, typer.Option(help="Square input size.")] = 224,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parameters and FLOPs (fvcore) at 1x3xSxS."""
    from secvit.complexity import measure

    result = measure(model, img_size)
    if json_out:
        print(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{model} at {img_size}x{img_size}")
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
