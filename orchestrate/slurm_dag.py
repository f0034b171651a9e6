"""`secvit repro all --executor slurm`: the stale part of a profile's DAG as SLURM jobs.

How it works:

- Planning is DVC's (``orchestrate/dag.py``, :func:`stale_stages`): a stage that has changed
  (``stage.changed()``: command, params, deps or outs differ from dvc.lock, or ``always_changed``)
  runs. A stage downstream of a planned one that has not changed itself is *conditional*: as
  ``dvc repro`` does, it is checked again once those upstream stages have run and committed, and
  runs only if its dependencies changed (an ``always_changed`` data stage whose manifest came out
  the same lets nothing downstream run).
- Each stage to run becomes one SLURM job that runs the stage's interpolated ``cmd`` in its
  working directory, with ``--dependency=afterok:<ids>`` on the jobs of its upstream stages, so
  independent stages run in parallel. A stage waits for its conditional upstream stages to be
  settled before it is submitted. Resources: the ``slurm`` section of params.yaml
  (:meth:`~secvit.orchestrate.slurm.SlurmConfig.for_stage`: per profile, stage kind and run).
- The jobs never run DVC (parallel ``dvc repro`` fails on the repo lock). This process
  holds no DVC lock while they run; as each job completes it records the stage with
  ``dvc commit -f --no-relink <stage>`` (serially, upstream first, leaving the workspace files
  alone), so a later ``dvc status``/``dvc repro`` sees it done.
- ``<slurm.folder>/<profile>/jobs.json`` remembers stage -> job id, and the stage's fingerprint
  when it was submitted (command, params values, hashes of its code: :func:`fingerprints`).
  Run the command again (after Ctrl-C, a lost connection, an edit of params.yaml) and it
  re-attaches to every job that is still pending or running, or completed but not committed,
  whose stage still has the same fingerprint: no cancel, no second submission. A job whose stage
  has changed is cancelled, and the command says which and why before it does. When a stage
  upstream of a re-attached job runs again (``always_changed``), a pending job waits for it too
  (``scontrol update ... Dependency``); a running one is cancelled and resubmitted only if that
  run changed the outputs it reads.
- All jobs are watched with one ``squeue`` call per poll (``slurm.poll_s``, default 60 s).
- A failed job is reported with its log tail, the jobs downstream of it are cancelled,
  the other jobs are waited for and committed, and the command ends with a one-line error.

Inside a SLURM allocation (``salloc``/``srun --pty``) plain ``dvc repro`` or
``secvit repro all`` works too: the stages then run one after another on the allocation.
"""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from secvit.atomic import write_json
from secvit.errors import SecvitError
from secvit.orchestrate.dag import (
    StalePlan,
    command_argv,
    commit_stage,
    downstream_of,
    fingerprint_changes,
    fingerprints,
    lock_outs,
    relink,
    still_changed,
)
from secvit.orchestrate.repro import check_repo, planned_stages, resolve_targets
from secvit.orchestrate.slurm import (
    ACTIVE,
    SlurmConfig,
    Tracked,
    cancel,
    console,
    job_for,
    load_slurm_config,
    log_tail,
    query_jobs,
    require_slurm,
    stage_kind,
    submit,
    watch,
)
from secvit.params import check_profile
from secvit.runs import tables_file

# ---- the re-attach state file


class JobsFile:
    """``jobs.json``: stage -> {job_id, cmd, fingerprint, submitted_at, committed} of one profile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                self.stages = json.loads(path.read_text()).get("stages", {})
            except ValueError:
                console.print(f"[yellow]ignoring unreadable {path}")

    def record(self, name: str, job_id: str, cmd: str, fingerprint: dict[str, Any] | None = None) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.stages[name] = {"job_id": str(job_id), "cmd": cmd, "fingerprint": fingerprint, "submitted_at": now, "committed": False}
        self.save()

    def committed(self, name: str) -> None:
        self.stages[name]["committed"] = True
        self.save()

    def save(self) -> None:
        write_json(self.path, {"stages": self.stages})


def set_dependency(job_id: str, after: list[str]) -> bool:
    """Make pending job ``job_id`` wait for (``afterok``) the jobs ``after`` instead of its old ones."""
    value = f"afterok:{':'.join(after)}" if after else ""
    out = subprocess.run(["scontrol", "update", f"JobId={job_id}", f"Dependency={value}"], capture_output=True, text=True)
    return out.returncode == 0


# ---- the scheduler


class Scheduler:
    """Re-attaches to, submits, watches and commits the jobs of one plan (``step`` is the live view's step)."""

    def __init__(self, root: Path, profile: str, plans: list[StalePlan], jobs: JobsFile, cfg: SlurmConfig, folder: Path) -> None:
        self.root, self.profile, self.jobs, self.cfg, self.folder = root, profile, jobs, cfg, folder
        self.plans = {p.name: p for p in plans}  # upstream first
        self.order = list(self.plans)
        self.rows: dict[str, Tracked] = {}  # stage -> its job: submitted now or re-attached
        self.view: list[Tracked] = []  # the rows shown and refreshed, in submission order
        self.settled: set[str] = set()  # committed, or found up to date
        self.done: set[str] = set()  # settled, failed, or skipped (upstream failed)
        self.failed: list[Tracked] = []
        self.submitted: list[str] = []
        self.reattached: list[str] = []
        self.before: dict[str, dict[str, Any] | None] = {}  # a stage run now: its outputs in dvc.lock before
        self.reads_old: dict[str, set[str]] = {}  # a re-attached running job -> upstream stages run again now
        self.fingerprints = fingerprints(root, self.order)

    # -- starting

    def reattach(self) -> None:
        """Take over the recorded jobs that still run what their stage asks; cancel (saying why) those
        whose stage has changed."""
        records = {n: r for n, r in self.jobs.stages.items() if n in self.plans and not r.get("committed")}
        found = query_jobs(r["job_id"] for r in records.values())
        if found is None:
            raise SecvitError("squeue did not answer (is the SLURM controller up?); run again to re-attach")
        for name in self.order:
            rec = records.get(name)
            if rec is None:
                continue
            row = Tracked(name, job_for(self.folder, rec["job_id"]))
            row.update(found.get(str(rec["job_id"])))
            if row.state not in ACTIVE | {"COMPLETED"}:
                continue  # failed, cancelled or forgotten: submitted again
            if rec.get("fingerprint"):
                changes = fingerprint_changes(rec["fingerprint"], self.fingerprints[name])
            else:  # recorded before fingerprints: the command alone
                changes = [] if rec.get("cmd") == self.plans[name].cmd else ["its command"]
            if changes:
                if row.state in ACTIVE:
                    console.print(f"cancelling SLURM job {rec['job_id']} ({name}, {row.state}): the stage changed since it was submitted: {', '.join(changes)}")
                    cancel([rec["job_id"]])
                continue
            row.note = "re-attached"
            self.rows[name] = row
            self.view.append(row)
            self.reattached.append(name)

    # -- submitting

    def _submit(self, plan: StalePlan) -> None:
        after = [self.rows[u].job.job_id for u in plan.upstream if u in self.rows and u not in self.settled and self.rows[u].state != "COMPLETED"]
        self.before[plan.name] = lock_outs(self.root, plan.name)
        job = submit(command_argv(plan.cmd), plan.wdir, self.cfg, plan.name, stage_kind(plan.name), self.folder / "%j", after, self.profile)
        self.jobs.record(plan.name, job.job_id, plan.cmd, self.fingerprints.get(plan.name))
        row = Tracked(plan.name, job, note=f"after {', '.join(u for u in plan.upstream if u not in self.settled)}" if after else "")
        self.rows[plan.name] = row
        self.view.append(row)
        self.submitted.append(plan.name)
        for name in self.order:  # re-attached jobs downstream of it: wait for this run, or check what it changes
            down = self.rows.get(name)
            if name == plan.name or plan.name not in self.plans[name].upstream or down is None or name not in self.reattached:
                continue
            if down.state == "PENDING":
                waits = [self.rows[u].job.job_id for u in self.plans[name].upstream if u in self.rows and not self.rows[u].finished()]
                if set_dependency(down.job.job_id, waits):
                    down.note = f"re-attached, now after {plan.name}"
                    continue
            self.reads_old.setdefault(name, set()).add(plan.name)

    def submit_ready(self) -> None:
        """Submit every stage whose upstream stages are settled or have jobs; check conditional
        stages again once their upstream stages are settled (up to date ones settle too)."""
        while True:
            check: list[str] = []
            for name in self.order:
                plan = self.plans[name]
                if name in self.done or name in self.rows:
                    continue
                if plan.conditional:
                    if all(u in self.settled for u in plan.upstream):
                        check.append(name)
                elif all(u in self.settled or u in self.rows for u in plan.upstream):
                    self._submit(plan)
            if not check:
                return
            changed = still_changed(self.root, check)
            for name in check:
                if name in changed:
                    self._submit(self.plans[name])
                else:
                    self.settled.add(name)
                    self.done.add(name)
                    console.print(f"[green]up to date[/]: {name} (the stages upstream ran; its dependencies did not change)")

    # -- watching

    def step(self, _: list[Tracked]) -> bool:
        for name in self.order:  # upstream first: commits go in DAG order
            row = self.rows.get(name)
            if name in self.done or row is None or not row.finished():
                continue
            if row.state != "COMPLETED":
                self._fail(row)
            elif all(u in self.settled for u in self.plans[name].upstream):
                self._commit(row)
        self.submit_ready()
        return all(name in self.done for name in self.order)

    def _commit(self, row: Tracked) -> None:
        try:
            commit_stage(self.root, row.stage)
        except Exception as e:  # a DVC error: show it, keep waiting for the other jobs
            row.note = "dvc commit failed"
            self.failed.append(row)
            self.done.add(row.stage)
            console.print(f"[red]stage {row.stage}: dvc commit failed: {type(e).__name__}: {e}")
            self._give_up_below(row.stage)
            return
        self.jobs.committed(row.stage)
        row.note = "committed"
        self.settled.add(row.stage)
        self.done.add(row.stage)
        if row.stage in self.before and lock_outs(self.root, row.stage) != self.before[row.stage]:
            self._outdated_by(row.stage)

    def _outdated_by(self, upstream: str) -> None:
        """``upstream`` ran again and changed its outputs: re-attached jobs that started before read
        the old ones. Cancel them (saying why) and run them again."""
        for name, ran in list(self.reads_old.items()):
            if upstream not in ran or name in self.done:
                continue
            row = self.rows.pop(name)
            self.view.remove(row)
            del self.reads_old[name]
            if row.state in ACTIVE:
                console.print(f"cancelling SLURM job {row.job.job_id} ({name}): {upstream} ran again and changed its outputs, which this job read before")
                cancel([row.job.job_id])

    def _fail(self, row: Tracked) -> None:
        self.failed.append(row)
        self.done.add(row.stage)
        console.print(log_tail(row.job), markup=False, highlight=False)
        console.print(f"[red]stage {row.stage}: SLURM job {row.job.job_id} ended {row.state}")
        self._give_up_below(row.stage)

    def _give_up_below(self, failed: str) -> None:
        """Nothing downstream of ``failed`` can be committed: cancel those jobs, skip those stages."""
        for name in downstream_of(list(self.plans.values()), failed):
            if name in self.done:
                continue
            self.done.add(name)
            other = self.rows.get(name)
            if other is not None:
                if other.state in ACTIVE:
                    cancel([other.job.job_id])
                other.state, other.note = "CANCELLED", f"upstream {failed} failed"

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


def repro_slurm(profile: str, root: Path = Path("."), targets: list[str] | None = None, poll_s: float | None = None) -> Path:
    """Run the stages of ``profile`` that ``dvc repro`` would run (of ``targets`` and upstream, default
    the whole profile) as SLURM jobs, re-attaching to the jobs of an earlier run; commit each to DVC
    as it completes. Polls SLURM every ``poll_s`` seconds (default ``slurm.poll_s``). Returns the path
    of the profile's tables."""
    check_profile(profile)
    check_repo(root)
    root = root.resolve()
    cfg = load_slurm_config(root / "params.yaml")
    require_slurm()
    tables = root / tables_file(profile)
    stages = resolve_targets(root, profile, targets)
    plans = planned_stages(root, profile, stages)  # without the peers where `peers.<profile>: false`
    if not plans:
        console.print(f"nothing to do: {', '.join(stages)} and their upstream stages are up to date")
        return tables
    folder = job_folder(root, cfg, profile)
    scheduler = Scheduler(root, profile, plans, JobsFile(folder / "jobs.json"), cfg, folder)
    try:
        scheduler.reattach()
        scheduler.submit_ready()
    except SecvitError as e:
        raise SecvitError(f"{e} (jobs submitted before it keep running; fix this and run again to re-attach)") from None
    console.print(
        f"{len(plans)} stage(s) planned: {len(scheduler.reattached)} job(s) re-attached, {len(scheduler.submitted)} submitted"
        + (f": {', '.join(scheduler.submitted)}" if scheduler.submitted else "")
    )
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
        return scheduler.step(tracked)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        watch(scheduler.view, f"secvit repro ({profile}) on SLURM", step, cfg.poll_s if poll_s is None else poll_s)
    except KeyboardInterrupt:
        active = [r.job.job_id for r in scheduler.rows.values() if r.stage not in scheduler.done]
        raise SecvitError(
            f"interrupted; SLURM jobs {', '.join(active) or 'none'} keep running: run the same command again to "
            f"re-attach ({scheduler.jobs.path}), or scancel them"
        ) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if scheduler.failed:
        raise scheduler.error()
    ran = len(scheduler.rows)
    console.print(f"committed {ran} stage(s) to dvc.lock, {len(scheduler.settled) - ran} found up to date; job logs in {folder}/")
    relink(root, [p.name for p in plans])
    return tables
