"""``secvit doctor``: what this machine can run, as a table; ``--run``: the GPU check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from secvit.cli.common import ParamsOpt, ProfileOpt, console, user_errors

STYLE = {"ok": "green", "info": "cyan", "warn": "yellow", "fail": "bold red"}


def doctor(
    profile: ProfileOpt = "paper",
    params: ParamsOpt = Path("params.yaml"),
    lock: Annotated[Path, typer.Option(help="The lockfile to compare the installed packages with.")] = Path("requirements.lock"),
    run: Annotated[bool, typer.Option("--run", help="Run the GPU check instead (SECA, training steps, Mask R-CNN, UperNet, bench).")] = False,
    device: Annotated[str, typer.Option(help="--run: cuda (real sizes) or cpu (tiny sizes, a smoke test of the check).")] = "cuda",
) -> None:
    """Check this machine for a profile: packages against the lockfile, torch's CUDA and the driver,
    GPUs, mmcv's CUDA ops, bf16, the profile's datasets, SLURM. Exit status 1 when the profile
    cannot run here (with --run: when a part of the GPU check failed)."""
    out = Console()
    if run:
        _run(device, params, out)
        return
    from secvit.doctor import diagnose

    report = diagnose(profile, params, lock)
    table = Table(title=f"secvit doctor: can this machine run the {profile} profile?")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(row.check, f"[{STYLE[row.status]}]{row.status}[/]", row.detail)
    out.print(table)
    if report.runnable:
        out.print(f"the {profile} profile can run here")
        return
    failed = ", ".join(r.check for r in report.rows if r.status == "fail")
    out.print(f"[bold red]the {profile} profile cannot run here[/] ({failed})")
    raise typer.Exit(1)


def _run(device: str, params: Path, out: Console) -> None:
    import os

    from secvit.bench import environment
    from secvit.gpu_check import run_checks

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # as `secvit bench models`: the CPU peak-memory profiler is quiet
    with console.status("GPU check") as status:
        checks = run_checks(device, params, progress=lambda message: status.update(f"GPU check: {message}"))
    env = environment(device)
    where = env.get("device_name") or env.get("cpu") or device
    table = Table(title=f"secvit GPU check on {device} ({where})")
    for column in ("part", "result", "s", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column == "s" else "left")
    for check in checks:
        table.add_row(check.part, "[green]pass[/]" if check.passed else "[bold red]FAIL[/]", f"{check.seconds:.1f}", check.detail)
    out.print(table)
    failed = [c.part for c in checks if not c.passed]
    out.print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(name="doctor")(user_errors(doctor))
