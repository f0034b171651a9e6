"""Result commands: tables (paper vs ours, with plots) and visualize-clusters (paper figure 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from secvit.cli.common import ParamsOpt, console, user_errors
from secvit.errors import SecvitError
from secvit.params import check_profile


def tables(
    profile: Annotated[str, typer.Option(help="Profile whose results to tabulate: smoke or paper.")],
    results: Annotated[
        Path | None, typer.Option("--results", help="Results directory (default: results/<profile>).")
    ] = None,
) -> None:
    """Write <results>/tables.md (paper tables 1-8 next to our numbers) and <results>/plots/*.png."""
    from secvit.runs import TABLES, results_root
    from secvit.tables.plots import write_plots
    from secvit.tables.render import write_tables

    check_profile(profile)
    if results is not None and not results.is_dir():
        raise SecvitError(f"results directory {results} does not exist; run the pipeline first or fix --results")
    results_dir = results if results is not None else results_root(profile)
    out = results_dir / TABLES
    write_tables(results_dir, profile, out)
    plots = write_plots(results_dir, profile)
    console.print(f"wrote {out}")
    for path in plots:
        console.print(f"wrote {path}")


def visualize_clusters(
    image: Annotated[Path | None, typer.Argument(help="Input image (any format PIL reads).")] = None,
    model: Annotated[str, typer.Option(help="SecViT model name.")] = "secvit_base",
    checkpoint: Annotated[
        Path | None, typer.Option(help="Weights: released .pth, our training checkpoint or .safetensors.")
    ] = None,
    ema: Annotated[bool, typer.Option("--ema", help="Take the EMA weights ('model_ema').")] = False,
    out: Annotated[Path | None, typer.Option(help="Output PNG (default: <image>-<model>-clusters.png).")] = None,
    img_size: Annotated[int, typer.Option(help="Resize the short side to this and centre-crop a square.")] = 224,
    head: Annotated[int, typer.Option(help="Attention head whose clusters to show.")] = 0,
    profile: Annotated[str | None, typer.Option(help="Stage mode: <profile>.figures of params.yaml and that run's checkpoint.")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Colour each stage's semantic equitable clusters over the image (paper figure 4)."""
    from secvit.visualize import visualize_clusters as run

    if profile is not None:
        from secvit.pipelines.figures import figures_stage

        console.print(f"wrote {figures_stage(profile, params)}")
        return
    if image is None:
        raise SecvitError("give an IMAGE, or --profile smoke|paper for the figures stage")
    path = run(image, model, checkpoint=checkpoint, out=out, img_size=img_size, head=head, ema=ema)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    for func in (tables, visualize_clusters):
        app.command(name=func.__name__.replace("_", "-"))(user_errors(func))
