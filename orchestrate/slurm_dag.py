"""`secvit repro all --executor slurm`: the stale part of a profile's DAG as SLURM jobs.

How it works:

- Staleness comes from DVC's own stage graph (``repo.index.graph``): a stage is stale if
  ``stage.changed()`` (its command, params, deps or outs differ from dvc.lock) or any stage
  upstream of it is stale. Only the targets and what is upstream of them are considered.
- Each stale stage becomes one SLURM job that runs the stage's interpolated ``cmd`` in its
  working directory, with ``--dependency=afterok:<ids>`` on the jobs of its stale upstream
  stages, so independent stages run in parallel. Resources: the ``slurm`` section of
  params.yaml, with ``slurm.stages.<kind>`` on top (kind = the stage name before ``@`` and
  ``-``: data-smoke@coco -> data, sweep and ablate -> pretrain).
- The jobs never run DVC (parallel ``dvc repro`` fails on the repo lock). This process
  holds no DVC lock while they run; as each job completes it records the stage with
  ``dvc commit -f --no-relink <stage>`` (serially, leaving the workspace files alone), so a
  later ``dvc status``/``dvc repro`` sees it done.
- ``<slurm.folder>/<profile>/jobs.json`` remembers stage -> job id, command and submission
  time. Run the command again (after Ctrl-C, a lost connection, ...) and it re-attaches:
  a stale stage whose job is still pending/running, or completed but not committed, is
  waited for instead of submitted again.
- A failed job is reported with its log tail, the jobs downstream of it are cancelled,
  the other jobs are waited for and committed, and the command ends with a one-line error.

Inside a SLURM allocation (``salloc``/``srun --pty``) plain ``dvc repro`` or
``secvit repro all`` works too: the stages then run one after another on the allocation.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from secvit.atomic import write_json
from secvit.errors import SecvitError
from secvit.params import check_profile
from secvit.runs import tables_file
from secvit.orchestrate.dag import StalePlan, command_argv, commit_stage, downstream_of, stale_stages
from secvit.orchestrate.repro import check_repo
from secvit.orchestrate.repro import targets as profile_targets
from secvit.orchestrate.slurm import (
    ACTIVE,
    SlurmConfig,
    Tracked,
    cancel,
    console,
    job_for,
    job_state,
    load_slurm_config,
    log_tail,
    require_slurm,
    stage_kind,
    submit,
    watch,
)

# ---- the re-attach state file


class JobsFile:
    """``jobs.json``: stage -> {job_id, cmd, submitted_at, committed} of one profile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                self.stages = json.loads(path.read_text()).get("stages", {})
            except ValueError:
                console.print(f"[yellow]ignoring unreadable {path}")

    def record(self, name: str, job_id: str, cmd: str) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.stages[name] = {"job_id": str(job_id), "cmd": cmd, "submitted_at": now, "committed": False}
        self.save()

    def committed(self, name: str) -> None:
        self.stages[name]["committed"] = True
        self.save()

    def save(self) -> None:
        write_json(self.path, {"stages": self.stages})


# ---- submission


def _reattach(plan: StalePlan, jobs: JobsFile, folder: Path, fresh: set[str]) -> Tracked | None:
    """The recorded job of a stale stage if it is still the one to wait for, else None
    (cancelling a recorded job that is still queued for an outdated run)."""
    rec = jobs.stages.get(plan.name)
    if not rec or rec.get("committed"):
        return None
    job = job_for(folder, rec["job_id"])
    state = job_state(job)
    if rec.get("cmd") == plan.cmd and not fresh & set(plan.upstream) and state in ACTIVE | {"COMPLETED"}:
        return Tracked(plan.name, job, state=state, note="re-attached")
    if state in ACTIVE:
        cancel([job.job_id])
    return None


def schedule(plans: list[StalePlan], jobs: JobsFile, cfg: SlurmConfig, folder: Path) -> dict[str, Tracked]:
    """Re-attach to or submit one job per stale stage (upstream first); returns stage -> job."""
    rows: dict[str, Tracked] = {}
    fresh: set[str] = set()
    for plan in plans:
        row = _reattach(plan, jobs, folder, fresh)
        if row is None:
            after = [rows[u].job.job_id for u in plan.upstream if rows[u].state != "COMPLETED"]
            job = submit(command_argv(plan.cmd), plan.wdir, cfg, plan.name, stage_kind(plan.name), folder, after)
            jobs.record(plan.name, job.job_id, plan.cmd)
            row = Tracked(plan.name, job, note=f"after {', '.join(plan.upstream)}" if after else "")
            fresh.add(plan.name)
        rows[plan.name] = row
    return rows


# ---- waiting, committing, failing


class Waiter:
    """The step function of the live view: commits completed stages, handles failures."""

    def __init__(self, plans: list[StalePlan], rows: dict[str, Tracked], jobs: JobsFile, root: Path) -> None:
        self.plans, self.rows, self.jobs, self.root = plans, rows, jobs, root
        self.done: set[str] = set()
        self.failed: list[Tracked] = []

    def __call__(self, _: list[Tracked]) -> bool:
        for plan in self.plans:  # upstream first: commits go in DAG order
            row = self.rows[plan.name]
            if plan.name in self.done or not row.finished():
                continue
            self.done.add(plan.name)
            if row.state == "COMPLETED":
                self._commit(row)
            else:
                self._fail(row)
        return len(self.done) == len(self.plans)

    def _commit(self, row: Tracked) -> None:
        try:
            commit_stage(self.root, row.stage)
        except Exception as e:  # a DVC error: show it, keep waiting for the other jobs
            row.note = "dvc commit failed"
            self.failed.append(row)
            console.print(f"[red]stage {row.stage}: dvc commit failed: {type(e).__name__}: {e}")
            return
        self.jobs.committed(row.stage)
        row.note = "committed"

    def _fail(self, row: Tracked) -> None:
        self.failed.append(row)
        console.print(log_tail(row.job), markup=False, highlight=False)
        console.print(f"[red]stage {row.stage}: SLURM job {row.job.job_id} ended {row.state}")
        for name in downstream_of(self.plans, row.stage):
            other = self.rows[name]
            if name in self.done:
                continue
            cancel([other.job.job_id])
            self.done.add(name)
            other.state, other.note = "CANCELLED", f"upstream {row.stage} failed"

    def error(self) -> SecvitError:
        first = self.failed[0]
        cancelled = sum(r.note.startswith("upstream ") for r in self.rows.values())
        more = f"; {len(self.failed) - 1} more stage(s) failed" if len(self.failed) > 1 else ""
        more += f"; {cancelled} dependent job(s) cancelled" if cancelled else ""
        if first.note == "dvc commit failed":
            what = "completed but dvc commit failed (error above)"
        else:
            what = f"ended {first.state} (log tail above)"
        return SecvitError(f"stage {first.stage}: SLURM job {first.job.job_id} {what}{more}")


def job_folder(root: Path, cfg: SlurmConfig, profile: str) -> Path:
    """Where the profile's job logs and jobs.json live (``slurm.folder`` is relative to the repo)."""
    folder = Path(cfg.folder)
    return (folder if folder.is_absolute() else root / folder) / profile


def repro_slurm(profile: str, root: Path = Path("."), targets: list[str] | None = None, poll_s: float = 5.0) -> Path:
    """Run the stale stages of ``profile`` (or of ``targets`` and upstream) as SLURM jobs,
    commit each to DVC as it completes; returns the path of the profile's tables."""
    check_profile(profile)
    check_repo(root)
    root = root.resolve()
    cfg = load_slurm_config(root / "params.yaml")
    require_slurm()
    tables = root / tables_file(profile)
    plans = stale_stages(root, targets or profile_targets(profile))
    if not plans:
        console.print(f"nothing to do: {', '.join(targets or profile_targets(profile))} and their upstream stages are up to date")
        return tables
    folder = job_folder(root, cfg, profile)
    jobs = JobsFile(folder / "jobs.json")
    try:
        rows = schedule(plans, jobs, cfg, folder / "%j")
    except SecvitError as e:
        raise SecvitError(f"{e} (jobs submitted before it keep running; fix this and run again to re-attach)") from None
    waiter = Waiter(plans, rows, jobs, root)
    # Ctrl-C takes effect between polls, never inside a commit to dvc.lock (DVC must not be
    # interrupted half-way); a second Ctrl-C stops at once.
    interrupted: list[bool] = []

    def on_sigint(*_: object) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)

    def step(tracked: list[Tracked]) -> bool:
        if interrupted:
            raise KeyboardInterrupt
        return waiter(tracked)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        watch(list(rows.values()), f"secvit repro ({profile}) on SLURM", step, poll_s)
    except KeyboardInterrupt:
        active = [r.job.job_id for r in rows.values() if r.stage not in waiter.done]
        raise SecvitError(
            f"interrupted; SLURM jobs {', '.join(active) or 'none'} keep running: run the same command again to "
            f"re-attach ({jobs.path}), or scancel them"
        ) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if waiter.failed:
        raise waiter.error()
    console.print(f"committed {len(plans)} stage(s) to dvc.lock; job logs in {folder}/")
    return tables
