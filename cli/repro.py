"""`secvit repro all`: the whole study (one profile) through DVC."""

from __future__ import annotations

from typing import Annotated

import typer

from secvit.cli.common import console, user_errors

repro_app = typer.Typer(help="Run the study through DVC.", no_args_is_help=True)


@repro_app.command("all")
@user_errors
def repro_all(
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
    """Run every stale stage of a profile's DAG and print where the tables are.

    results/tables.md and results/plots/ then point to the profile's results/<profile>/ files.
    """
    from secvit.orchestrate.repro import point_latest, repro_local

    if jobs is not None and executor != "local":
        from secvit.errors import SecvitError

        raise SecvitError("--jobs is for the local executor (on SLURM, independent stages run as parallel jobs anyway)")
    if executor == "local":
        tables = repro_local(profile, jobs=jobs)
    elif executor == "slurm":
        from secvit.orchestrate.slurm_dag import repro_slurm

        tables = repro_slurm(profile)
    else:
        from secvit.errors import SecvitError

        raise SecvitError(f"unknown executor {executor!r}; choose local or slurm")
    latest = point_latest(profile)
    console.print(f"[bold green]done[/]: tables in {latest} (-> {tables}), figures in {latest.parent / 'plots'}/")


def register(app: typer.Typer) -> None:
    app.add_typer(repro_app, name="repro")
