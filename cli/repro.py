"""`secvit repro [TARGETS]`: the study (one profile), or the part of it that targets need, through DVC."""

from __future__ import annotations

from typing import Annotated

import typer

from secvit.cli.common import console, user_errors


@user_errors
def repro(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="all (default: the whole profile, tables and figures), a table (table4: what it shows), a run "
            "(secvit_tiny, secvit_tiny-mask_rcnn-1x) or a dvc.yaml stage name.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[str, typer.Option(help="smoke (CPU, generated data) or paper (the full study).")] = "smoke",
    executor: Annotated[str, typer.Option(help="local: stages run here; slurm: stale stages become SLURM jobs.")] = "local",
    jobs: Annotated[
        int | None,
        typer.Option(
            help="local: stages run side by side, their output in runs/<profile>/logs/ (1: plain `dvc repro`). "
            "Default: 1 with GPUs, else one per CPU core up to 4.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run what is stale upstream of the targets (the stages `dvc repro` would run), and print where the results are.

    With `all`, results/tables.md and results/plots/ then point to the profile's results/<profile>/ files.
    """
    from secvit.errors import SecvitError
    from secvit.orchestrate.repro import point_latest, repro_local

    names = list(targets or ["all"])
    if jobs is not None and executor != "local":
        raise SecvitError("--jobs is for the local executor (on SLURM, independent stages run as parallel jobs anyway)")
    if executor == "local":
        tables = repro_local(profile, jobs=jobs, names=names)
    elif executor == "slurm":
        from secvit.orchestrate.slurm_dag import repro_slurm

        tables = repro_slurm(profile, targets=names)
    else:
        raise SecvitError(f"unknown executor {executor!r}; choose local or slurm")
    if "all" not in names:
        console.print(f"[bold green]done[/]: {', '.join(names)} ({profile}); results in {tables.parent}/ (`secvit tables --profile {profile}` renders what exists)")
        return
    latest = point_latest(profile)
    console.print(f"[bold green]done[/]: tables in {latest} (-> {tables}), figures in {latest.parent / 'plots'}/")


def register(app: typer.Typer) -> None:
    app.command("repro")(repro)
