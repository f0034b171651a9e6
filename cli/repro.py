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
            "(secvit_tiny, secvit_tiny-mask_rcnn-1x) or a dvc.yaml stage name. `secvit repro status`: the profile's "
            "SLURM jobs and who orchestrates them.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[str, typer.Option(help="smoke (CPU, generated data) or paper (the full study).")] = "smoke",
    executor: Annotated[str, typer.Option(help="local: stages run here; slurm: stale stages become SLURM jobs.")] = "local",
    lane: Annotated[
        list[str] | None,
        typer.Option(help="released (the authors' checkpoints evaluated here, the dense tables from them), ours (our pretraining "
                     "and what runs from it) or both. Default: params.yaml released.lanes.", show_default=False),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="local: stages run side by side, their output in runs/<profile>/logs/ (1: plain `dvc repro`). "
            "Default: 1 with GPUs, else one per CPU core up to 4.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what each stage would get (submit, attach, cancel and "
                                          "resubmit, up to date) and why; change nothing.")] = False,
    cancel_changed: Annotated[
        bool | None,
        typer.Option("--cancel-changed/--keep-changed", help="slurm: cancel and resubmit running jobs whose stage changed "
                     "since they were submitted, or let them finish (their stages stay stale). Default: ask on a terminal, "
                     "else refuse.", show_default=False),
    ] = None,
) -> None:
    """Run what is stale upstream of the targets (the stages `dvc repro` would run), and print where the results are.

    With `all`, results/tables.md and results/plots/ then point to the profile's results/<profile>/ files.
    """
    from secvit.errors import SecvitError
    from secvit.orchestrate.repro import one_lane, point_latest, repro_local
    from secvit.study import load_study
    from secvit.tables.render import write_tables
    from secvit.runs import results_root

    names = list(targets or ["all"])
    if names == ["status"]:
        from secvit.orchestrate.slurm_dag import show_status

        show_status(profile)
        return
    if jobs is not None and executor != "local":
        raise SecvitError("--jobs is for the local executor (on SLURM, independent stages run as parallel jobs anyway)")
    if cancel_changed is not None and executor != "slurm":
        raise SecvitError("--cancel-changed/--keep-changed are for the slurm executor (the local one cancels nothing)")
    if executor == "local":
        tables = repro_local(profile, jobs=jobs, names=names, lanes=lane, dry_run=dry_run)
    elif executor == "slurm":
        from secvit.orchestrate.slurm_dag import repro_slurm

        tables = repro_slurm(profile, targets=names, lanes=lane, dry_run=dry_run, cancel_changed=cancel_changed)
    else:
        raise SecvitError(f"unknown executor {executor!r}; choose local or slurm")
    if dry_run:
        return
    if "all" not in names:
        console.print(f"[bold green]done[/]: {', '.join(names)} ({profile}); results in {tables.parent}/ (`secvit tables --profile {profile}` renders what exists)")
        return
    if one_lane(load_study(), profile, lane):  # the tables stage waits for both lanes: render what exists
        write_tables(results_root(profile), profile)
    latest = point_latest(profile)
    console.print(f"[bold green]done[/]: tables in {latest} (-> {tables}), figures in {latest.parent / 'plots'}/")


def register(app: typer.Typer) -> None:
    app.command("repro")(repro)
