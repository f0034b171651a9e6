"""Watching SLURM jobs: their states (one ``squeue`` for all the jobs watched, per poll), their logs, a live
table, and cancelling them.

States are read with ``squeue`` (:func:`query_jobs`), then from submitit's result files once SLURM has
forgotten a job; not with sacct, which needs SLURM accounting.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from rich.console import Console
from rich.live import Live
from rich.table import Table

console = Console(stderr=True)

STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "REQUEUED", "UNKNOWN")
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "PREEMPTED"})  # PREEMPTED jobs come back requeued
# scontrol/squeue states -> ours
_STATE_MAP = {
    "CONFIGURING": "RUNNING", "COMPLETING": "RUNNING", "SIGNALING": "RUNNING", "STAGE_OUT": "RUNNING",
    "RESIZING": "RUNNING", "SUSPENDED": "PENDING", "STOPPED": "PENDING", "RESV_DEL_HOLD": "PENDING",
    "REQUEUE_FED": "REQUEUED", "REQUEUE_HOLD": "REQUEUED", "SPECIAL_EXIT": "REQUEUED",
    "NODE_FAIL": "FAILED", "BOOT_FAIL": "FAILED", "OUT_OF_MEMORY": "FAILED", "DEADLINE": "TIMEOUT",
    "REVOKED": "CANCELLED",
}



def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (empty when SLURM no longer knows the job)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def _squeue_state(job_id: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
    lines = out.stdout.split() if out.returncode == 0 else []
    return lines[0] if lines else None


def map_state(raw: str | None) -> str:
    """A SLURM state name (``CANCELLED+``, ``NODE_FAIL``, ...) as one of :data:`STATES`."""
    if not raw:
        return "UNKNOWN"
    name = raw.split()[0].rstrip("+").upper()
    return name if name in STATES else _STATE_MAP.get(name, "UNKNOWN")


def job_for(folder: str | Path, job_id: str) -> submitit.SlurmJob:
    """The submitit job ``job_id`` whose files are in ``folder`` (may contain ``%j``)."""
    return submitit.SlurmJob(folder=str(folder), job_id=str(job_id))


def _result_state(job) -> str:
    """COMPLETED/FAILED from the job's result pickle, UNKNOWN if it has none."""
    path = Path(job.paths.result_pickle)
    if not path.exists():
        return "UNKNOWN"
    try:
        with path.open("rb") as f:
            outcome = pickle.load(f)[0]
    except Exception:
        return "UNKNOWN"
    return "COMPLETED" if outcome == "success" else "FAILED"


def job_state(job, info: dict[str, str] | None = None) -> str:
    """The state of a job (a submitit job, or a bare job id) as one of :data:`STATES`: from
    ``scontrol`` (``info``, when already read) or ``squeue`` while SLURM knows the job, then from
    the submitit job's result pickle once SLURM has forgotten it; UNKNOWN if neither tells."""
    job_id = str(getattr(job, "job_id", job))
    info = job_info(job_id) if info is None else info
    state = map_state(info.get("JobState") if info else _squeue_state(job_id))
    if state == "UNKNOWN" and hasattr(job, "paths"):
        state = _result_state(job)
    return state


def log_tail(job, n: int = 30) -> str:
    """The last ``n`` lines of the job's stdout and stderr logs (task 0); stderr, with the
    stage's error, comes last."""
    parts = []
    for label, path in (("stdout", job.paths.stdout), ("stderr", job.paths.stderr)):
        path = Path(path)
        if not path.exists():
            continue
        lines = path.read_text(errors="replace").splitlines()[-n:]
        if lines:
            parts.append(f"----- {label} of job {job.job_id}: {path} (last {len(lines)} lines)\n" + "\n".join(lines))
    return "\n".join(parts) or f"(no log yet for job {job.job_id} in {Path(job.paths.stdout).parent})"


def cancel(job_ids: Iterable[str]) -> None:
    ids = [str(j) for j in job_ids]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def query_jobs(job_ids: Iterable[str]) -> dict[str, dict[str, str]] | None:
    """The state, run time and restarts of every job in ``job_ids``, from ONE ``squeue`` call:
    job id -> ``{"JobState", "RunTime", "Restarts"}`` (the names of ``scontrol show job``). Jobs
    that SLURM no longer knows are absent; None when squeue failed (the controller is unreachable)."""
    ids = list(dict.fromkeys(str(j) for j in job_ids))
    if not ids:
        return {}
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", ",".join(ids), "-O", "JobID:|,State:|,TimeUsed:|,RestartCnt:|"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:  # one id that SLURM forgot: "Invalid job id specified"; else unreachable
        return {} if "invalid job id" in out.stderr.lower() else None
    found: dict[str, dict[str, str]] = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 4 and parts[0]:
            found[parts[0]] = {"JobState": parts[1], "RunTime": parts[2], "Restarts": parts[3]}
    return found


# ---- live view

LOST_AFTER_S = 300.0  # a job SLURM no longer lists and that left no result is given up after this


@dataclass
class Tracked:
    """One stage job being watched."""

    stage: str
    job: Any  # submitit.SlurmJob
    state: str = "PENDING"
    elapsed: str = ""
    note: str = ""
    restarts: int = 0
    unknown_since: float | None = None

    def update(self, info: dict[str, str] | None) -> str:
        """Take the state (and run time, restarts) from ``info`` (a :func:`query_jobs` row), or,
        once SLURM forgot the job (None), from its result. A job that SLURM forgot without
        leaving a result counts as FAILED after :data:`LOST_AFTER_S`."""
        self.state = map_state(info.get("JobState")) if info else _result_state(self.job)
        if info:
            self.elapsed = info.get("RunTime") or self.elapsed
            self.restarts = int(info.get("Restarts") or 0)
        if self.state != "UNKNOWN":
            self.unknown_since = None
        else:
            self.unknown_since = self.unknown_since or time.monotonic()
            if time.monotonic() - self.unknown_since >= LOST_AFTER_S:
                self.state, self.note = "FAILED", "lost: SLURM forgot the job and it left no result"
        return self.state

    def refresh(self) -> str:
        """Read this one job's state from SLURM (for many jobs, :func:`refresh_all` asks once)."""
        found = query_jobs([self.job.job_id])
        return self.state if found is None else self.update(found.get(str(self.job.job_id)))

    def finished(self) -> bool:
        """True once the job has ended (as of the last refresh)."""
        return self.state not in ACTIVE and self.state != "UNKNOWN"


def refresh_all(rows: Iterable[Tracked]) -> None:
    """Refresh every row that has not ended, with one SLURM query for all of them."""
    open_rows = [r for r in rows if not r.finished()]
    found = query_jobs(r.job.job_id for r in open_rows)
    if found is None:  # the controller did not answer: keep the states until the next poll
        return
    for row in open_rows:
        row.update(found.get(str(row.job.job_id)))


def jobs_table(rows: list[Tracked], title: str) -> Table:
    colors = {"COMPLETED": "green", "RUNNING": "cyan", "FAILED": "red", "CANCELLED": "red", "TIMEOUT": "red"}
    table = Table(title=title)
    for col in ("stage", "job id", "state", "elapsed", "note"):
        table.add_column(col)
    for row in rows:
        color = colors.get(row.state, "yellow")
        note = " ".join(filter(None, [row.note, f"requeued x{row.restarts}" if row.restarts else ""]))
        table.add_row(row.stage, str(row.job.job_id), f"[{color}]{row.state}[/]", row.elapsed, note)
    return table


def watch(rows: list[Tracked], title: str, step: Callable[[list[Tracked]], bool], poll_s: float = 60.0) -> None:
    """Show ``rows`` in a live table; every ``poll_s`` seconds refresh them all (one SLURM query) and
    call ``step(rows)`` (which may add rows) until it returns True."""
    with Live(jobs_table(rows, title), console=console, refresh_per_second=2) as live:
        while True:
            refresh_all(rows)
            done = step(rows)
            live.update(jobs_table(rows, title))
            if done:
                return
            time.sleep(poll_s)
