"""`secvit repro all --executor slurm`: the stale part of a profile's DAG as SLURM jobs.

How it works:

- Which stages run is DVC's decision (``orchestrate/dag.py``, :func:`stale_stages`): a stage that has changed
  (``stage.changed()``: command, params, deps or outs differ from dvc.lock, or ``always_changed``)
  runs. A stage downstream of one that runs, but not changed itself, is *conditional*: as
  ``dvc repro`` does, it is checked again once those upstream stages have run and committed, and
  runs only if its dependencies changed (an ``always_changed`` data stage whose manifest came out
  the same lets nothing downstream run).
- Each stage to run becomes one SLURM job that runs the stage's interpolated ``cmd`` in its
  working directory, with ``--dependency=afterok:<ids>`` on the jobs of its upstream stages, so
  independent stages run in parallel. A stage waits for its conditional upstream stages to be
  settled before it is submitted. Resources: the ``slurm`` section of params.yaml, resolved for the
  study's stage (:meth:`~secvit.study.slurm.SlurmConfig.for_stage`: per profile, stage kind and run).
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
- Nothing running is cancelled without asking. A job whose stage changed since it was submitted (an edit of its
  code, params or command) is cancelled and resubmitted only with ``--cancel-changed``, or when the user says
  yes on a terminal (told how many device-hours the jobs have spent); with ``--keep-changed`` (or a no) it runs
  to its end and its stage stays stale. Without a terminal and without either flag the command refuses.
  ``--dry-run`` prints, per stage, whether it would submit, attach, cancel and resubmit, or leave it, and why.
- Jobs run the code they were planned with: a snapshot of the package (:mod:`.snapshot`), on every requeue
  too. A job's result is committed only if its stage's fingerprint when it ends equals the one it was
  submitted with; else the stage stays stale, with one line naming the files that changed.
- One orchestrator per study and profile (:mod:`.lock`): a second one refuses and says how to watch.
- All jobs are watched with one ``squeue`` call per poll (``slurm.poll_s``, default 60 s).
- A failed job is reported with its log tail, the jobs downstream of it are cancelled,
  the other jobs are waited for and committed, and the command ends with a one-line error.

Inside a SLURM allocation (``salloc``/``srun --pty``) plain ``dvc repro`` or
``secvit repro all`` works too: the stages then run one after another on the allocation.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from secvit.atomic import write_json
from secvit.errors import SecvitError
from secvit.orchestrate.dag import (
    StaleStage,
    command_argv,
    commit_stage,
    downstream_of,
    fingerprint_changes,
    fingerprints,
    lock_outs,
    relink,
    still_changed,
    target_closure,
)
from secvit.orchestrate.lock import OrchestratorLock, holder, is_held
from secvit.orchestrate.snapshot import Snapshot, changed_files, prune_snapshots, take_snapshot
from secvit.orchestrate.repro import check_repo, resolve_targets, stages_to_run
from secvit.orchestrate.slurm import refuse_unsubmittable, require_slurm, submit
from secvit.orchestrate.slurm_watch import ACTIVE, Tracked, cancel, console, job_for, jobs_table, log_tail, query_jobs, watch
from secvit.params import check_profile
from secvit.runs import tables_file
from secvit.study import Study, load_study

# ---- the re-attach state file


class JobsFile:
    """``jobs.json``: stage -> {job_id, cmd, fingerprint, code, submitted_at, committed} of one profile (``code``:
    the snapshot the job runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                self.stages = json.loads(path.read_text()).get("stages", {})
            except ValueError:
                console.print(f"[yellow]ignoring unreadable {path}")

    def record(self, name: str, job_id: str, cmd: str, fingerprint: dict[str, Any] | None = None, code: Path | None = None) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.stages[name] = {"job_id": str(job_id), "cmd": cmd, "fingerprint": fingerprint, "code": str(code) if code else None,
                             "submitted_at": now, "committed": False}
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


def elapsed_hours(elapsed: str) -> float:
    """Hours in a SLURM run time (``M:SS``, ``H:MM:SS``, ``D-HH:MM:SS``); 0 if unreadable."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", elapsed.strip())
    if not match:
        return 0.0
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return days * 24 + hours + minutes / 60 + seconds / 3600


class Scheduler:
    """Re-attaches to, submits, watches and commits the jobs of the stale stages (``step`` is the live view's step)."""

    def __init__(self, root: Path, study: Study, stale: list[StaleStage], jobs: JobsFile, folder: Path,
                 snapshot: Snapshot | None = None) -> None:
        self.root, self.study, self.jobs, self.folder, self.snapshot = root, study, jobs, folder, snapshot
        self.stale = {s.name: s for s in stale}  # upstream first
        self.order = list(self.stale)
        self.rows: dict[str, Tracked] = {}  # stage -> its job: submitted now or re-attached
        self.view: list[Tracked] = []  # the rows shown and refreshed, in submission order
        self.settled: set[str] = set()  # committed, or found up to date
        self.done: set[str] = set()  # settled, failed, or skipped (upstream failed)
        self.failed: list[Tracked] = []
        self.left_stale: list[str] = []  # jobs that ran what their stage no longer asks: not committed
        self.submitted: list[str] = []
        self.reattached: list[str] = []
        self.before: dict[str, dict[str, Any] | None] = {}  # a stage run now: its outputs in dvc.lock before
        self.reads_old: dict[str, set[str]] = {}  # a re-attached running job -> upstream stages run again now
        self.fingerprints = fingerprints(root, self.order)
        self.found: dict[str, Tracked] = {}  # recorded jobs that still run or await their commit
        self.changed: dict[str, list[str]] = {}  # of those, the active ones whose stage changed: what changed

    # -- starting

    def survey(self) -> None:
        """Find the recorded jobs that are still pending, running, or completed but not committed, and
        which of those run what their stage no longer asks. Changes nothing."""
        records = {n: r for n, r in self.jobs.stages.items() if n in self.stale and not r.get("committed")}
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
            self.found[name] = row
            changes = self._changes(rec, name)
            if changes:
                self.changed[name] = changes

    def _changes(self, rec: dict[str, Any], name: str) -> list[str]:
        if rec.get("fingerprint"):
            return fingerprint_changes(rec["fingerprint"], self.fingerprints[name])
        return [] if rec.get("cmd") == self.stale[name].cmd else ["its command"]  # recorded before fingerprints

    def to_cancel(self) -> dict[str, Tracked]:
        """The active jobs whose stage changed since they were submitted."""
        return {n: r for n, r in self.found.items() if n in self.changed and r.state in ACTIVE}

    def device_hours(self, name: str, row: Tracked) -> float:
        """Device-hours a job has spent so far: its run time x its GPUs (its processes where it has none)."""
        cfg = self.study.slurm.for_stage(self.study[name])
        return elapsed_hours(row.elapsed) * cfg.nodes * (cfg.gpus_per_node or cfg.ntasks_per_node())

    def reattach(self, cancel_changed: bool) -> None:
        """Take over the recorded jobs of :meth:`survey`. Those whose stage changed: cancelled (saying why)
        with ``cancel_changed``, else left to finish, watched, and not committed (the stage stays stale)."""
        for name, row in self.found.items():
            changes = self.changed.get(name)
            if changes and (cancel_changed or row.state not in ACTIVE):
                if row.state in ACTIVE:
                    console.print(f"cancelling SLURM job {row.job.job_id} ({name}, {row.state}): the stage changed since it was submitted: {', '.join(changes)}")
                    cancel([row.job.job_id])
                continue
            row.note = "re-attached" + (", stage changed: not to be committed" if changes else "")
            self.rows[name] = row
            self.view.append(row)
            self.reattached.append(name)

    def describe(self, closure: list[str], cancel_changed: bool | None) -> list[tuple[str, str, str]]:
        """(stage, action, why) for every stage of ``closure`` (after :meth:`survey`): what a run would do."""
        lines = []
        for name in closure:
            stage = self.stale.get(name)
            row = self.found.get(name)
            if stage is None:
                lines.append((name, "up to date", "nothing it depends on changed since dvc.lock recorded it"))
            elif name in self.changed and row is not None and row.state in ACTIVE:
                spent = f"{row.state} {row.elapsed or '0:00'}, {self.device_hours(name, row):.2f} device-hours spent"
                why = f"changed since job {row.job.job_id} was submitted: {', '.join(self.changed[name])}"
                if cancel_changed:
                    lines.append((name, f"cancel job {row.job.job_id} ({spent}) and resubmit", why))
                else:
                    lines.append((name, f"leave job {row.job.job_id} running ({spent}); the stage stays stale", why + "; --cancel-changed cancels and resubmits it"))
            elif row is not None and name not in self.changed:
                lines.append((name, f"attach to job {row.job.job_id} ({row.state})", "the stage is what the job was submitted for"))
            elif stage.conditional:
                lines.append((name, "check once its upstream stages ran", f"runs only if they change its dependencies ({', '.join(stage.upstream)})"))
            else:
                lines.append((name, "submit", stage.why or "stale"))
        return lines

    # -- submitting

    def _submit(self, stage: StaleStage) -> None:
        after = [self.rows[u].job.job_id for u in stage.upstream if u in self.rows and u not in self.settled and self.rows[u].state != "COMPLETED"]
        self.before[stage.name] = lock_outs(self.root, stage.name)
        settings = self.study.slurm.for_stage(self.study[stage.name])
        code = self.snapshot.path if self.snapshot else None
        job = submit(command_argv(stage.cmd), stage.wdir, settings, stage.name, self.folder / "%j", after, code)
        self.jobs.record(stage.name, job.job_id, stage.cmd, self.fingerprints.get(stage.name), code)
        row = Tracked(stage.name, job, note=f"after {', '.join(u for u in stage.upstream if u not in self.settled)}" if after else "")
        self.rows[stage.name] = row
        self.view.append(row)
        self.submitted.append(stage.name)
        for name in self.order:  # re-attached jobs downstream of it: wait for this run, or check what it changes
            down = self.rows.get(name)
            if name == stage.name or stage.name not in self.stale[name].upstream or down is None or name not in self.reattached:
                continue
            if down.state == "PENDING":
                waits = [self.rows[u].job.job_id for u in self.stale[name].upstream if u in self.rows and not self.rows[u].finished()]
                if set_dependency(down.job.job_id, waits):
                    down.note = f"re-attached, now after {stage.name}"
                    continue
            self.reads_old.setdefault(name, set()).add(stage.name)

    def submit_ready(self) -> None:
        """Submit every stage whose upstream stages are settled or have jobs; check conditional
        stages again once their upstream stages are settled (up to date ones settle too)."""
        while True:
            check: list[str] = []
            for name in self.order:
                stage = self.stale[name]
                if name in self.done or name in self.rows:
                    continue
                if stage.conditional:
                    if all(u in self.settled for u in stage.upstream):
                        check.append(name)
                elif all(u in self.settled or u in self.rows for u in stage.upstream):
                    self._submit(stage)
            if not check:
                return
            changed = still_changed(self.root, check)
            for name in check:
                if name in changed:
                    self._submit(self.stale[name])
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
            elif all(u in self.settled for u in self.stale[name].upstream):
                self._commit(row)
        self.submit_ready()
        return all(name in self.done for name in self.order)

    def _provenance(self, name: str) -> str | None:
        """Why the finished job of ``name`` must not be committed: its stage (code, params, command) differs now
        from what the job was submitted with, naming the files that changed; None when it is the same."""
        rec = self.jobs.stages.get(name, {})
        if not rec.get("fingerprint"):
            return None  # recorded before fingerprints: nothing to compare
        changes = fingerprint_changes(rec["fingerprint"], fingerprints(self.root, [name])[name])
        if not changes:
            return None
        deps = [c.split(" ", 1)[1] for c in changes if c.startswith("dependency ")]
        files = changed_files(self.root, rec["code"], deps) if rec.get("code") and deps else []
        return ", ".join([*files, *(c for c in changes if not c.startswith("dependency ") or not files)])

    def _commit(self, row: Tracked) -> None:
        changed = self._provenance(row.stage)
        if changed:
            row.note = "not committed: the stage changed"
            self.left_stale.append(row.stage)
            self.done.add(row.stage)
            console.print(f"[yellow]stage {row.stage} stays stale: changed since job {row.job.job_id} was submitted ({changed}); "
                          "its result is not committed against code that did not produce it")
            self._give_up_below(row.stage, "stays stale")
            return
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

    def _give_up_below(self, failed: str, how: str = "failed") -> None:
        """Nothing downstream of ``failed`` can be committed: cancel those jobs, skip those stages."""
        for name in downstream_of(list(self.stale.values()), failed):
            if name in self.done:
                continue
            self.done.add(name)
            other = self.rows.get(name)
            if other is not None:
                if other.state in ACTIVE:
                    cancel([other.job.job_id])
                other.state, other.note = "CANCELLED", f"upstream {failed} {how}"

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


def slurm_folder(root: Path, study: Study) -> Path:
    """``slurm.folder``, relative to the repository unless absolute: job logs, jobs.json, code snapshots."""
    folder = Path(study.slurm.folder)
    return folder if folder.is_absolute() else root / folder


def needed_snapshots(folder: Path) -> set[str]:
    """The code snapshots that the recorded jobs of every profile under the SLURM ``folder`` run and may run
    again (a requeue): those of the jobs not committed yet."""
    return {rec["code"] for jobs in folder.glob("*/jobs.json") for rec in JobsFile(jobs).stages.values()
            if rec.get("code") and not rec.get("committed")}


def job_folder(root: Path, study: Study, profile: str) -> Path:
    """Where the profile's job logs, jobs.json and orchestrator lock live."""
    return slurm_folder(root, study) / profile


def show_status(profile: str, root: Path = Path(".")) -> None:
    """``secvit repro status``: who orchestrates the profile now (the lock's holder), and each recorded job's
    state, run time and whether it was committed (one squeue for all)."""
    check_profile(profile)
    check_repo(root)
    root = root.resolve()
    study = load_study(root / "params.yaml")
    require_slurm()
    folder = job_folder(root, study, profile)
    lock = OrchestratorLock(folder, profile).path
    if is_held(lock):
        who = holder(lock)
        console.print(f"orchestrator: `secvit repro` on {who.get('host', '?')}, pid {who.get('pid', '?')}, since {who.get('started', '?')}")
    else:
        console.print(f"no orchestrator runs the {profile} profile now: `secvit repro --executor slurm --profile {profile}` re-attaches to the jobs below")
    jobs = JobsFile(folder / "jobs.json")
    found = query_jobs(r["job_id"] for r in jobs.stages.values())
    if found is None:
        raise SecvitError("squeue did not answer (is the SLURM controller up?)")
    rows = []
    for name, rec in jobs.stages.items():
        row = Tracked(name, job_for(folder, rec["job_id"]), note="committed" if rec.get("committed") else f"submitted {rec.get('submitted_at', '?')}")
        row.update(found.get(str(rec["job_id"])))
        rows.append(row)
    if not rows:
        console.print(f"no SLURM jobs recorded in {jobs.path}")
        return
    console.print(jobs_table(rows, f"secvit repro ({profile}) on SLURM: {jobs.path}"))


def _decide(scheduler: Scheduler, cancel_changed: bool | None, ask: Callable[[str], bool] | None) -> bool:
    """Whether to cancel and resubmit the running jobs whose stage changed: ``--cancel-changed`` (True) or
    ``--keep-changed`` (False), else the answer on a terminal; without one, a one-line refusal."""
    changed = scheduler.to_cancel()
    if not changed or cancel_changed is not None:
        return bool(cancel_changed)
    hours = sum(scheduler.device_hours(n, r) for n, r in changed.items())
    what = (f"{len(changed)} running SLURM job(s) of stages that changed since they were submitted "
            f"({', '.join(f'{n}: {r.job.job_id}' for n, r in changed.items())}) have spent {hours:.2f} device-hours")
    if ask is None and sys.stdin.isatty():
        def ask(question: str) -> bool:
            return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    if ask is None:
        raise SecvitError(f"{what}: give --cancel-changed to cancel and resubmit them, or --keep-changed to let them finish "
                          "(their stages then stay stale); `--dry-run` shows the whole plan. Nothing was submitted or cancelled")
    for name, row in changed.items():
        console.print(f"{name}: job {row.job.job_id} ({row.state} {row.elapsed}): the stage changed: {', '.join(scheduler.changed[name])}")
    return ask(f"{what}. Cancel and resubmit them? (no: they finish and their stages stay stale)")


def repro_slurm(profile: str, root: Path = Path("."), targets: list[str] | None = None, poll_s: float | None = None,
                lanes: list[str] | None = None, dry_run: bool = False, cancel_changed: bool | None = None, ask: Callable[[str], bool] | None = None) -> Path:
    """Run the stages of ``profile`` that ``dvc repro`` would run (of ``targets`` and upstream, default
    the whole profile) as SLURM jobs, re-attaching to the jobs of an earlier run; commit each to DVC
    as it completes. Polls SLURM every ``poll_s`` seconds (default ``slurm.poll_s``). Returns the path
    of the profile's tables.

    ``dry_run``: print what would happen to each stage, and why, and change nothing. Running jobs whose stage
    changed are cancelled and resubmitted with ``cancel_changed`` True, left to finish (their stage stays
    stale) with False; None asks (``ask``, else on a terminal) or, without a terminal, refuses."""
    check_profile(profile)
    check_repo(root)
    root = root.resolve()
    study = load_study(root / "params.yaml")
    poll_s = study.slurm.poll_s if poll_s is None else poll_s  # the section is checked before anything runs
    require_slurm()
    tables = root / tables_file(profile)
    targets = resolve_targets(study, profile, targets, lanes)
    folder = job_folder(root, study, profile)
    lock = OrchestratorLock(folder, profile)
    if not dry_run:  # before planning: two orchestrators never plan the same submissions
        lock.acquire()
    try:
        return _run(root, study, profile, targets, lanes, folder, tables, poll_s, dry_run, cancel_changed, ask)
    finally:
        lock.release()


def _run(root: Path, study: Study, profile: str, targets: list[str], lanes: list[str] | None, folder: Path, tables: Path, poll_s: float, dry_run: bool,
         cancel_changed: bool | None, ask: Callable[[str], bool] | None) -> Path:
    stale = stages_to_run(root, study, profile, targets, lanes, explain=dry_run)  # without the peers where `peers.<profile>: false`, other lanes
    if not stale and not dry_run:
        console.print(f"nothing to do: {', '.join(targets)} and their upstream stages are up to date")
        return tables
    refuse_unsubmittable(study, [study[s.name] for s in stale], root / "params.yaml")  # before any job is submitted
    scheduler = Scheduler(root, study, stale, JobsFile(folder / "jobs.json"), folder)
    scheduler.survey()
    if dry_run:
        peers = study.left_out(profile, lanes)
        closure = [n for n in target_closure(root, targets) if n not in peers]
        for name, action, why in scheduler.describe(closure, cancel_changed):
            print(f"{name}: {action} ({why})")
        changed = scheduler.to_cancel()
        if changed and not cancel_changed:
            hours = sum(scheduler.device_hours(n, r) for n, r in changed.items())
            print(f"dry run: {len(changed)} running job(s) of changed stages ({hours:.2f} device-hours spent) would be cancelled "
                  "only with --cancel-changed (or a yes on a terminal); nothing was submitted or cancelled")
        else:
            print("dry run: nothing was submitted or cancelled")
        return tables
    scheduler.reattach(_decide(scheduler, cancel_changed, ask))
    # after the fingerprints: code edited in between is found changed when the job ends, never committed
    store = slurm_folder(root, study) / "code"
    scheduler.snapshot = take_snapshot(root, store)
    removed = prune_snapshots(store, {scheduler.snapshot.path.as_posix(), *needed_snapshots(store.parent)})
    if removed:
        console.print(f"removed {len(removed)} code snapshot(s) that no job runs any more from {store}")
    try:
        scheduler.submit_ready()
    except SecvitError as e:
        raise SecvitError(f"{e} (jobs submitted before it keep running; fix this and run again to re-attach)") from None
    console.print(
        f"{len(stale)} stage(s) to run: {len(scheduler.reattached)} job(s) re-attached, {len(scheduler.submitted)} submitted"
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
        watch(scheduler.view, f"secvit repro ({profile}) on SLURM", step, poll_s)
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
    if scheduler.left_stale:
        raise SecvitError(f"{len(scheduler.left_stale)} stage(s) stay stale, not committed: {', '.join(scheduler.left_stale)} changed after their jobs "
                          "were submitted (lines above); run again to resubmit them")
    ran = len(scheduler.rows)
    console.print(f"committed {ran} stage(s) to dvc.lock, {len(scheduler.settled) - ran} found up to date; job logs in {folder}/")
    relink(root, [s.name for s in stale])
    return tables
