"""Run stage commands as SLURM jobs with submitit.

One job per stage: a :class:`StageJob` runs the stage's ``secvit ...`` command in the
repository and, when SLURM preempts or times it out, is requeued to run the same
command again; training then resumes from ``last.pth`` in its run directory.
Job settings come from the ``slurm:`` section of params.yaml (:class:`SlurmConfig`),
which no DVC stage tracks, so changing the cluster never invalidates results.

Job states are read with ``squeue`` (:func:`query_jobs`: one call for all the jobs being watched,
per poll), then from submitit's result files once SLURM has forgotten a job; not with sacct,
which needs SLURM accounting. Before a time limit SLURM sends USR2: :class:`StageJob` passes it on
to the stage, which saves a checkpoint after the step in flight and stops, and the job is requeued
(up to ``max_requeues`` time limits).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from secvit.errors import SecvitError
from secvit.params import from_section, load_params, section

console = Console(stderr=True)

KINDS = ("data", "pretrain", "evaluate", "detect", "segment", "complexity", "tables", "figures")
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
EXECUTOR_VAR = "SECVIT_EXECUTOR"  # the executor of stage commands run without --executor (local or slurm)
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def stage_env() -> dict[str, str]:
    """This process's environment with its interpreter's bin/ first on PATH, so that stage commands
    (here, in a SLURM job, or side by side: ``secvit.orchestrate.dag``) run this secvit and this dvc."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# settings that only the whole section sets (not per profile, stage kind or run)
GLOBAL_SETTINGS = frozenset({"folder", "poll_s", "stages", "runs", "profiles"})


@dataclass
class SlurmConfig:
    """The ``slurm:`` section of params.yaml. The settings of one stage's job: these, then
    ``stages[kind]``, then ``profiles[profile]`` (which may hold ``stages`` and ``runs`` of its
    own), then ``runs[run]`` (:meth:`for_stage`)."""

    partition: str | None
    account: str | None
    qos: str | None
    nodes: int
    gpus_per_node: int
    tasks_per_node: int | None  # None: one task (DDP process) per GPU, one task if no GPUs
    cpus_per_task: int
    mem_gb: float | None  # None: the partition's default
    timeout_min: int
    signal_delay_s: int
    max_requeues: int  # time-outs a job may be requeued after (submitit's max_num_timeout)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    folder: str = "runs/slurm"
    poll_s: float = 60.0
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        minimum = {"nodes": 1, "gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 1, "signal_delay_s": 0, "max_requeues": 0, "poll_s": 0.1}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise SecvitError(f"setting '{where}.{name}' must be at least {low:g}, got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb < 0.1:
            raise SecvitError(f"setting '{where}.mem_gb' must be at least 0.1 or null, got {self.mem_gb}")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise SecvitError(f"setting '{where}.tasks_per_node' must be at least 1 or null, got {self.tasks_per_node}")
        unknown = sorted(set(self.stages) - set(KINDS))
        if unknown:
            raise SecvitError(f"unknown stage kind '{where}.stages.{unknown[0]}'; valid kinds: {', '.join(KINDS)}")
        from secvit.params import PROFILES

        unknown = sorted(set(self.profiles) - set(PROFILES))
        if unknown:
            raise SecvitError(f"unknown profile '{where}.profiles.{unknown[0]}'; profiles: {', '.join(PROFILES)}")
        for kind in self.stages:
            self._layer({}, f"{where}.stages.{kind}", self.stages[kind])  # an error now, not at submission
        for run in self.runs:
            self._layer({}, f"{where}.runs.{run}", self.runs[run])
        for profile, layer in self.profiles.items():
            self._layer({}, f"{where}.profiles.{profile}", layer, nested=True)
            for kind, settings in ((layer or {}).get("stages") or {}).items():
                if kind not in KINDS:
                    raise SecvitError(f"unknown stage kind '{where}.profiles.{profile}.stages.{kind}'; valid kinds: {', '.join(KINDS)}")
                self._layer({}, f"{where}.profiles.{profile}.stages.{kind}", settings)
            for run, settings in ((layer or {}).get("runs") or {}).items():
                self._layer({}, f"{where}.profiles.{profile}.runs.{run}", settings)
        if self.stages or self.runs or self.profiles:  # every combination merges into valid settings
            for profile in [None, *self.profiles]:
                for kind in KINDS:
                    self.for_stage(kind, profile)

    def _layer(self, merged: dict[str, Any], where: str, layer: Any, nested: bool = False) -> dict[str, Any]:
        """``merged`` with the settings of ``layer`` on top (``stages``/``runs`` of a profile kept apart)."""
        if layer is None:
            return merged
        if not isinstance(layer, dict):
            raise SecvitError(f"{where} must be a mapping of settings")
        fixed = sorted((GLOBAL_SETTINGS - ({"stages", "runs"} if nested else set())) & set(layer))
        if fixed:
            raise SecvitError(f"'{where}.{fixed[0]}' can only be set for all jobs (in slurm: itself)")
        unknown = sorted(set(layer) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SecvitError(f"unknown setting '{where}.{unknown[0]}'")
        own = {k: v for k, v in layer.items() if k not in ("stages", "runs")}
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("stages", "runs", "profiles")}
        from_section(SlurmConfig, base | own, where)  # each value type- and range-checked where it is written
        return merged | own

    def for_stage(self, kind: str, profile: str | None = None, stage: str | None = None) -> SlurmConfig:
        """The settings of one job: of stage kind ``kind`` in ``profile``, running stage ``stage``
        (a DVC stage name such as ``pretrain@paper-secvit_large``). ``runs`` keys match the stage
        name, its item (``paper-secvit_large``) or the item without its profile (``secvit_large``)."""
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("stages", "runs", "profiles")}
        merged = self._layer(merged, f"slurm.stages.{kind}", self.stages.get(kind))
        layer = self.profiles.get(profile) or {} if profile else {}
        merged = self._layer(merged, f"slurm.profiles.{profile}", layer, nested=True)
        merged = self._layer(merged, f"slurm.profiles.{profile}.stages.{kind}", (layer.get("stages") or {}).get(kind))
        for where, runs in (("slurm.runs", self.runs), (f"slurm.profiles.{profile}.runs", layer.get("runs") or {})):
            for key in run_keys(stage, profile):
                merged = self._layer(merged, f"{where}.{key}", runs.get(key))
        return from_section(SlurmConfig, merged | {"stages": {}, "runs": {}, "profiles": {}}, f"slurm (job of {stage or kind})")

    def for_kind(self, kind: str) -> SlurmConfig:
        """The settings of a job of stage kind ``kind`` (no profile or run of its own)."""
        return self.for_stage(kind)

    def ntasks_per_node(self) -> int:
        """``tasks_per_node`` if set, else one task per GPU, one task on CPU-only jobs. Several tasks
        make one DDP run (gloo on CPU); one task with several GPUs launches a process per GPU itself."""
        return self.tasks_per_node or self.gpus_per_node or 1


def run_keys(stage: str | None, profile: str | None) -> list[str]:
    """The ``runs`` keys that name stage ``stage``, least specific first: ``secvit_large``,
    ``paper-secvit_large``, ``pretrain@paper-secvit_large``."""
    if not stage:
        return []
    item = stage.split("@", 1)[1] if "@" in stage else ""
    keys = [stage]
    if item and item != stage:
        keys.insert(0, item)
        if profile and item.startswith(f"{profile}-"):
            keys.insert(0, item.removeprefix(f"{profile}-"))
    return list(dict.fromkeys(keys))


def load_slurm_config(params: str | Path = "params.yaml") -> SlurmConfig:
    """The validated ``slurm`` section of the params file."""
    return from_section(SlurmConfig, section(load_params(params), "slurm", str(params)), "slurm")


def stage_kind(stage: str) -> str:
    """Resource kind of a DVC stage name: ``data-smoke@coco`` -> data, ``sweep@...`` and ``ablate@...`` -> pretrain."""
    base = stage.split("@", 1)[0].split("-", 1)[0]
    return "pretrain" if base in ("sweep", "ablate") else base


def require_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SecvitError("SLURM is not available here (no sbatch/srun on PATH); use --executor local")


def make_executor(
    cfg: SlurmConfig,
    name: str,
    kind: str,
    folder: str | Path | None = None,
    dependencies: Iterable[str] = (),
    profile: str | None = None,
    stage: str | None = None,
):
    """A submitit executor for the job ``name`` (a DVC stage name, or a command's job name) of stage
    kind ``kind`` in ``profile``, with the settings of :meth:`SlurmConfig.for_stage`.

    ``folder`` holds the job's pickles and logs (default ``cfg.folder/%j``); ``dependencies``
    are job ids that must complete successfully first (``--dependency=afterok:...``).
    """
    import submitit

    require_slurm()
    res = cfg.for_stage(kind, profile, stage or name)
    extra = dict(res.additional_parameters)
    deps = [str(d) for d in dependencies]
    if deps:
        own = f"afterok:{':'.join(deps)}"
        extra["dependency"] = f"{extra['dependency']},{own}" if extra.get("dependency") else own
    executor = submitit.AutoExecutor(folder=str(folder or Path(cfg.folder) / "%j"), cluster="slurm", slurm_max_num_timeout=res.max_requeues)
    params: dict[str, Any] = {
        "name": name,
        "nodes": res.nodes,
        "tasks_per_node": res.ntasks_per_node(),
        "cpus_per_task": res.cpus_per_task,
        "timeout_min": res.timeout_min,
        "slurm_signal_delay_s": res.signal_delay_s,
        "slurm_srun_args": [f"--cpus-per-task={res.cpus_per_task}"],  # srun no longer inherits it (SLURM >= 22.05)
        "slurm_additional_parameters": extra,
        "slurm_setup": list(res.setup),
    }
    if res.mem_gb is not None:
        params["mem_gb"] = res.mem_gb
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    for key in ("partition", "account", "qos"):
        if getattr(res, key) is not None:
            params[f"slurm_{key}"] = getattr(res, key)
    executor.update_parameters(**params)
    return executor


def _ignore_usr2() -> None:
    """In the stage process: ignore SLURM's pre-timeout USR2 (submitit handles it in the job's own
    process) until the stage listens for it (training does: :func:`secvit.engine.distributed.listen_for_stop`)."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class StageJob:
    """A stage command run inside a SLURM job; requeued (not resumed from a pickle) on preemption or
    time-out, after the stage has saved a checkpoint.

    Before the time limit, SLURM sends USR2 to the job; submitit calls :meth:`checkpoint` (in task 0),
    which passes the signal on to the stage's processes and waits up to ``stop_wait_s`` for them to
    save a checkpoint and exit (training stops after the step in flight), then requeues the job.
    The requeued job runs the same command, which resumes from that checkpoint.
    """

    def __init__(self, stop_wait_s: float = 60.0) -> None:
        self.stop_wait_s = stop_wait_s
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"stop_wait_s": self.stop_wait_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.get("stop_wait_s", 60.0))

    def __call__(self, argv: list[str], workdir: str) -> int:
        from secvit.engine.distributed import STOP_EXIT_CODE

        env = self._environment()
        exe = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        print(f"[secvit] running in {workdir}: {shlex.join(argv)}", flush=True)
        # its own process group: USR2 reaches the stage and every process it starts (one per GPU)
        self._process = subprocess.Popen([exe, *argv[1:]], cwd=workdir, env=env, preexec_fn=_ignore_usr2, start_new_session=True)
        while (code := self._process.poll()) is None:  # polling: the signal handler may wait for it too
            time.sleep(0.5)
        if code in (-signal.SIGTERM, STOP_EXIT_CODE):  # SLURM ends the job, or another task stopped the run
            self._wait_to_be_killed()
        if code != 0:
            raise RuntimeError(f"`{shlex.join(argv)}` exited with status {code} in {workdir}")
        return 0

    def checkpoint(self, argv: list[str], workdir: str):
        """On preemption or time-out: let the stage save a checkpoint and stop, then run the same
        command again in a fresh job (it resumes itself)."""
        import submitit

        self._stop_stage()
        return submitit.helpers.DelayedSubmission(StageJob(self.stop_wait_s), argv, workdir)

    def _stop_stage(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        print(f"[secvit] asking the stage to checkpoint and stop (USR2; waiting up to {self.stop_wait_s:.0f} s)", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGUSR2)
        deadline = time.monotonic() + self.stop_wait_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        code = process.poll()
        print(f"[secvit] stage {'still running' if code is None else f'exited with status {code}'}; requeueing", flush=True)

    @staticmethod
    def _environment() -> dict[str, str]:
        """This job's environment, with torch.distributed set from SLURM for multi-task jobs."""
        import submitit

        tasks = int(os.environ.get("SLURM_NTASKS", "1"))
        if tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        else:
            for name in DIST_VARS:
                os.environ.pop(name, None)
        env = stage_env()
        env[EXECUTOR_VAR] = "local"  # the stage runs here, in this job: never as a job of its own
        env["PYTHONUNBUFFERED"] = "1"
        if "SLURM_CPUS_PER_TASK" in env:
            env.setdefault("OMP_NUM_THREADS", env["SLURM_CPUS_PER_TASK"])
        return env

    @staticmethod
    def _wait_to_be_killed(seconds: float = 120.0) -> None:
        """The stage was terminated or stopped on request: SLURM is cancelling or requeueing this job and
        kills us next. Waiting keeps submitit from recording a failure for a job that will run again."""
        print("[secvit] stage command terminated or stopped; waiting for SLURM to end this job", flush=True)
        time.sleep(seconds)


# ---- job states and logs


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


def job_for(folder: str | Path, job_id: str):
    """The submitit job ``job_id`` whose files are in ``folder`` (may contain ``%j``)."""
    import submitit

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


def jobs_table(rows: list[Tracked], title: str):
    from rich.table import Table

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
    from rich.live import Live

    with Live(jobs_table(rows, title), console=console, refresh_per_second=2) as live:
        while True:
            refresh_all(rows)
            done = step(rows)
            live.update(jobs_table(rows, title))
            if done:
                return
            time.sleep(poll_s)


# ---- one stage command through SLURM (`secvit pretrain ... --executor slurm`)


def executor_choice(executor: str | None) -> str:
    """``--executor`` if given, else ``$SECVIT_EXECUTOR``, else local; checked."""
    where = "--executor"
    if executor is None:
        executor, where = os.environ.get(EXECUTOR_VAR) or "local", EXECUTOR_VAR
    if executor not in ("local", "slurm"):
        raise SecvitError(f"unknown executor {executor!r} ({where}); choose local or slurm")
    return executor


def use_slurm(executor: str | None) -> bool:
    """True for ``--executor slurm`` (or, without the option, ``SECVIT_EXECUTOR=slurm``), False for local."""
    return executor_choice(executor) == "slurm"


def stage_argv(command: str, options: dict[str, Any]) -> list[str]:
    """``secvit <command> --key value ...`` for the options that are set."""
    argv = ["secvit", command]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def submit(
    argv: list[str],
    workdir: Path,
    cfg: SlurmConfig,
    name: str,
    kind: str,
    folder: Path,
    dependencies: Iterable[str] = (),
    profile: str | None = None,
    stage: str | None = None,
):
    """Submit ``argv`` (run in ``workdir``) as one SLURM job named ``name`` (its settings:
    :meth:`SlurmConfig.for_stage` of ``kind``, ``profile`` and ``stage``, default ``name``); returns the submitit job."""
    executor = make_executor(cfg, name, kind, folder, dependencies, profile, stage)
    stop_wait_s = max(5.0, 0.75 * cfg.for_stage(kind, profile, stage or name).signal_delay_s)  # then requeued, saved or not
    try:
        return executor.submit(StageJob(stop_wait_s), list(argv), str(workdir))
    except Exception as e:  # sbatch refused the job: unknown partition, account, ...
        lines = str(e).strip().splitlines()
        raise SecvitError(f"sbatch refused job {name}: {lines[-1] if lines else type(e).__name__}") from None


def run_on_slurm(command: str, options: dict[str, Any], profile: str, params: Path, kind: str | None = None, poll_s: float = 5.0) -> str:
    """Run ``secvit <command> <options>`` in this directory as a SLURM job, show its state live, wait.

    Returns the job id. If the job does not complete, prints its log tail to stderr and
    raises :class:`SecvitError` naming the job and its state.
    """
    cfg = load_slurm_config(params)
    argv = stage_argv(command, options)
    run = [str(options[k]) for k in ("model", "clusters", "ablation") if options.get(k)]
    name = "-".join(["secvit", command, profile, *run])
    stage = f"{command}@{'-'.join([profile, *run])}"  # as dvc.yaml names it: slurm.runs settings apply
    job = submit(argv, Path.cwd(), cfg, name, kind or command, Path(cfg.folder) / profile / "%j", profile=profile, stage=stage)
    console.print(f"submitted SLURM job {job.job_id}: {shlex.join(argv)}\nlogs: {job.paths.stdout} and .err")
    row = Tracked(command, job)
    try:
        watch([row], f"secvit {command} on SLURM", lambda rows: rows[0].finished(), poll_s)
    except KeyboardInterrupt:
        raise SecvitError(f"interrupted; SLURM job {job.job_id} keeps running (scancel {job.job_id} stops it)") from None
    if row.state != "COMPLETED":
        print(log_tail(job), file=sys.stderr)
        raise SecvitError(f"SLURM job {job.job_id} ({name}) ended {row.state}; the end of its log is above")
    console.print(f"SLURM job {job.job_id} completed (run time {row.elapsed})")
    return str(job.job_id)
