"""Shared CLI plumbing: one-line errors instead of tracebacks, and the rich console."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from rich.console import Console

from secvit.errors import SecvitError

console = Console(stderr=True)
ProfileOpt = Annotated[str, typer.Option(help="Profile section of params.yaml: smoke or paper.")]
ParamsOpt = Annotated[Path, typer.Option(help="The params file.")]
DeviceOpt = Annotated[
    str | None,
    typer.Option(help="cuda: the stage needs a usable GPU (checked first); cpu: it may run without one. Default: <profile>.device.", show_default=False),
]
AllowCpuOpt = Annotated[
    bool,
    typer.Option("--allow-cpu", help="Opt in to running a GPU stage (paper profile, --device cuda) on the CPU; same as SECVIT_ALLOW_CPU=1."),
]
F = TypeVar("F", bound=Callable)


def user_errors(func: F) -> F:
    """Turn :class:`SecvitError` into ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SecvitError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
