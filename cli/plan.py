"""`secvit plan`: what the study costs before anything runs (secvit/cost/)."""

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
    lane: Annotated[list[str] | None, typer.Option(help="released, ours or both (default: params.yaml released.lanes).",
                                                   show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Device-hours and wall time of every stage of a profile, the total, each paper table's share, the peers', and
    how soon each lane gives its first trustworthy number."""
    from secvit.cost.plan import plan as make_plan, render
    from secvit.cost.rates import load_throughput

    result = make_plan(profile, params, load_throughput(throughput, params.parent), executor, only=stage, lanes=lane)
    print(json.dumps(result.to_dict(), indent=1) if json_out else render(result))


def register(app: typer.Typer) -> None:
    app.command(name="plan")(plan)
