"""Data command: generate (smoke), check layouts, verify images, write manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from secvit.cli.common import ParamsOpt, ProfileOpt, console, user_errors


def data(
    profile: ProfileOpt = "smoke",
    dataset: Annotated[list[str] | None, typer.Option(help="imagenet, coco or ade20k (repeatable; default all).")] = None,
    params: ParamsOpt = Path("params.yaml"),
    workers: Annotated[int | None, typer.Option(help="Processes that decode the images (default: every CPU this process may use).")] = None,
    released: Annotated[
        str | None, typer.Option(help="Write the smoke profile's stand-in for this model's released checkpoint instead (released.stand_in).")
    ] = None,
) -> None:
    """Check dataset layouts (generating the tiny smoke datasets first), verify every image and mask, write the manifests.

    A bad image or mask stops nothing: it is listed with its fix, and every stage leaves it out.
    """
    from secvit.pipelines.data import prepare, stand_in_stage
    from secvit.data.config import DATASETS

    if released is not None:
        console.print(f"{released}: released-layout stand-in {stand_in_stage(profile, params, released)}", highlight=False)
        return

    for name in dataset or DATASETS:
        out, bad = prepare(profile, params, name, workers)
        for rel, problem in bad.items():
            console.print(f"[yellow]warning:[/] {name}: {rel}: {problem}", soft_wrap=True, highlight=False)
        console.print(f"{name}: manifest {out}" + (f" ({len(bad)} bad images left out)" if bad else ""), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(user_errors(data))
