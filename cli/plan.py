"""`secvit plan`: what the study costs before anything runs (orchestrate/plan.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from secvit.cli.common import ParamsOpt, ProfileOpt, user_errors


@user_errors
def plan(
    profile: ProfileOpt = "paper",
    throughput: Annotated[
        str | None,
        typer.Option(help="a100 or h100 (defaults from the paper's table 2), or a file of `secvit bench train`. "
                     "Default: runs/bench/throughput.json if measured, else a100.", show_default=False),
    ] = None,
    executor: Annotated[str, typer.Option(help="slurm: devices and time limits from params.yaml slurm:; local: this machine's devices.")] = "slurm",
    params: ParamsOpt = Path("params.yaml"),
    stage: Annotated[list[str] | None, typer.Option(help="Only these stages (shell patterns, e.g. 'detect@paper-*'); repeatable.",
                                                     show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Device-hours and wall time of every stage of a profile, the total, each paper table's share and the peers'."""
    from secvit.orchestrate.plan import load_throughput, plan as make_plan, render

    result = make_plan(profile, params, load_throughput(throughput, params.parent), executor, only=stage)
    print(json.dumps(result.to_dict(), indent=1) if json_out else render(result))


def register(app: typer.Typer) -> None:
    app.command(name="plan")(plan)
