"""Data command: generate (smoke), check layouts, write manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from secvit.cli.common import ParamsOpt, ProfileOpt, console, user_errors


def data(
    profile: ProfileOpt = "smoke",
    dataset: Annotated[list[str] | None, typer.Option(help="imagenet, coco or ade20k (repeatable; default all).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Check dataset layouts (generating the tiny smoke datasets first) and write their manifests."""
    from secvit.pipelines.data import prepare
    from secvit.pipelines.settings import DATASETS

    for name in dataset or DATASETS:
        console.print(f"{name}: manifest {prepare(profile, params, name)}")


def register(app: typer.Typer) -> None:
    app.command()(user_errors(data))
