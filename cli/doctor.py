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
    lock: Annotated[
        Path | None, typer.Option(help="The lockfile to compare the installed packages with (default: the one .venv was installed from).")
    ] = None,
    run: Annotated[bool, typer.Option("--run", help="Run the GPU check instead (SECA, every family eager and compiled, throughput, memory, pretraining, dense).")] = False,
    device: Annotated[str, typer.Option(help="--run: cuda (real sizes) or cpu (tiny sizes, a test of the check).")] = "cuda",
    parts: Annotated[str | None, typer.Option(help="--run: the parts to run, comma-separated (default: all; on cpu all but dense; a wrong name lists them).")] = None,
    out: Annotated[Path | None, typer.Option(help="--run: where gpu_check.json and gpu_check.md go (default: runs/gpu_check/<device>).")] = None,
) -> None:
    """Check this machine for a profile: packages against the lockfile in use, torch's CUDA and the driver,
    GPUs, mmcv's CUDA ops, bf16, the profile's datasets, SLURM. Exit status 1 when the profile
    cannot run here (with --run: when a part of the GPU check failed)."""
    screen = Console()
    if run:
        chosen = tuple(p.strip() for p in parts.split(",") if p.strip()) if parts else None
        _run(device, params, chosen, out or Path("runs/gpu_check") / device, screen)
        return
    from secvit.doctor.report import diagnose

    report = diagnose(profile, params, lock)
    table = Table(title=f"secvit doctor: can this machine run the {profile} profile?")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(row.check, f"[{STYLE[row.status]}]{row.status}[/]", row.detail)
    screen.print(table)
    if report.runnable:
        screen.print(f"the {profile} profile can run here")
        return
    failed = ", ".join(r.check for r in report.rows if r.status == "fail")
    screen.print(f"[bold red]the {profile} profile cannot run here[/] ({failed})")
    raise typer.Exit(1)


def _run(device: str, params: Path, parts: tuple[str, ...] | None, folder: Path, out: Console) -> None:
    import json
    import os

    from secvit.doctor.gpu_check import check_report, report_markdown, run_checks

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # as `secvit bench models`: the CPU peak-memory profiler is quiet
    with console.status("GPU check") as status:
        checks = run_checks(device, params, progress=lambda message: status.update(f"GPU check: {message}"), parts=parts)
    command = f"secvit doctor --run --device {device}" + (f" --parts {','.join(parts)}" if parts else "")
    report = check_report(checks, device, command)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "gpu_check.md").write_text(report_markdown(report))
    table = Table(title=f"secvit GPU check on {device} ({report['environment']['device_name']})")
    for column in ("part", "result", "s", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column == "s" else "left")
    for check in checks:
        shown = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[yellow]skip[/]"}[check.status]
        table.add_row(check.part, shown, f"{check.seconds:.1f}", check.detail)
    out.print(table)
    failed = [c.part for c in checks if not c.passed]
    skipped = sum(c.status == "skip" for c in checks)
    out.print(f"{len(checks) - len(failed) - skipped} passed, {len(failed)} failed, {skipped} skipped; {folder / 'gpu_check.json'}, {folder / 'gpu_check.md'}")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(name="doctor")(user_errors(doctor))
