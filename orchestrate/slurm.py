"""Stage commands as SLURM jobs (submitit): the job that runs a stage, its submission, and one stage command run
as a job and waited for (``secvit pretrain ... --executor slurm``).

One job per stage: a :class:`StageJob` runs the stage's ``secvit ...`` command in the repository and, when
SLURM preempts or times it out, is requeued to run the same command again; training then resumes from
``last.pth`` in its run directory. A job's settings are the stage's resolved ``slurm`` settings
(:meth:`secvit.study.slurm.SlurmConfig.for_stage`). Every stop signal saves: before a time limit SLURM sends
USR2 (``--signal``), on preemption, ``scancel``, ``scontrol requeue`` and node drains TERM (then KILL after
GraceTime or KillWait). The stage finishes the step in flight, saves a checkpoint and stops; the job is then
requeued (by :class:`StageJob` after USR2, USR1 or a TERM that ends nothing, by SLURM after a preemption;
up to ``max_requeues`` time limits) or ends where it was cancelled. Watching jobs is :mod:`.slurm_watch`; the DAG's jobs,
:mod:`.slurm_dag`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import submitit

from secvit.engine.distributed import STOP_EXIT_CODE, STOP_SIGNAL, ignore_stop_signals
from secvit.errors import SecvitError
from secvit.orchestrate.env import EXECUTOR_VAR, stage_env
from secvit.orchestrate.slurm_watch import Tracked, console, log_tail, watch
from secvit.study import Stage, Study, load_study
from secvit.study.slurm import SlurmConfig, cluster_partitions, job_problem

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def require_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise SecvitError("SLURM is not available here (no sbatch/srun on PATH); use --executor local")


def refuse_unsubmittable(study: Study, stages: Iterable[Stage], params: Path) -> None:
    """Before any job is submitted: resolve every stage's SLURM settings and refuse, in one line naming the setting
    to change, if a job would get no GPU in a GPU profile, asks for a partition ``sinfo`` does not list, or has a
    time limit that cannot hold a stop warning and a checkpoint's write (:func:`secvit.study.slurm.job_problem`)."""
    from secvit.cost.rates import load_throughput  # the checkpoint write rate (measured by `secvit bench train`, else assumed)
    from secvit.device import profile_device

    stages = list(stages)
    if not stages:
        return
    partitions = cluster_partitions()
    rate = load_throughput(None, params.parent).checkpoint_gb_per_s
    gpu = {profile: profile_device(params, profile) == "cuda" for profile in {s.profile for s in stages}}
    for stage in stages:
        problem = job_problem(study.slurm, study.slurm.for_stage(stage), stage.kind, stage.profile, stage.slurm_keys, stage.name,
                              gpu[stage.profile], partitions, rate)
        if problem:
            raise SecvitError(f"nothing submitted: {problem}")


def make_executor(settings: SlurmConfig, name: str, folder: str | Path, dependencies: Iterable[str] = (),
                  code: Path | None = None) -> submitit.AutoExecutor:
    """A submitit executor for the job ``name`` (a stage name) with a job's resolved ``settings``
    (:meth:`SlurmConfig.for_stage`). ``folder`` holds the job's pickles and logs (``%j``: its id);
    ``dependencies`` are job ids that must complete successfully first (``--dependency=afterok:...``);
    ``code``: a code snapshot (:mod:`.snapshot`) the job runs, its requeues too, first on PYTHONPATH."""
    require_slurm()
    extra = dict(settings.additional_parameters)
    deps = [str(d) for d in dependencies]
    if deps:
        own = f"afterok:{':'.join(deps)}"
        extra["dependency"] = f"{extra['dependency']},{own}" if extra.get("dependency") else own
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=settings.max_requeues)
    params: dict[str, Any] = {
        "name": name,
        "nodes": settings.nodes,
        "tasks_per_node": settings.ntasks_per_node(),
        "cpus_per_task": settings.cpus_per_task,
        "timeout_min": settings.timeout_min,
        "slurm_signal_delay_s": settings.signal_delay_s,
        "slurm_srun_args": [f"--cpus-per-task={settings.cpus_per_task}"],  # srun no longer inherits it (SLURM >= 22.05)
        "slurm_additional_parameters": extra,
        # the snapshot first, and not the job's working directory (python -m would put the working tree's secvit/ first)
        "slurm_setup": list(settings.setup) + ([f"export PYTHONPATH={shlex.quote(str(code))}${{PYTHONPATH:+:$PYTHONPATH}} PYTHONSAFEPATH=1"]
                                               if code else []),
    }
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    if settings.gpus_per_node:
        params["gpus_per_node"] = settings.gpus_per_node
    for key in ("partition", "account", "qos"):
        if getattr(settings, key) is not None:
            params[f"slurm_{key}"] = getattr(settings, key)
    executor.update_parameters(**params)
    return executor


class StageJob:
    """A stage command run inside a SLURM job; requeued (not resumed from a pickle) on preemption or
    time-out, after the stage has saved a checkpoint.

    Before the time limit, SLURM sends USR2 to the job; submitit calls :meth:`checkpoint` (in task 0),
    which passes the signal on to the stage's processes and waits up to ``stop_wait_s`` for them to
    save a checkpoint and exit (training stops after the step in flight), then requeues the job.
    TERM (preemption, ``scancel``, a drain) and USR1 do the same through :meth:`_on_stop_signal`, which
    requeues the job only where SLURM is not already ending it (``scancel --signal=TERM``; not a real
    ``scancel``, which ends it, nor a preemption, which SLURM requeues itself).
    The requeued job runs the same command, which resumes from that checkpoint.
    """

    def __init__(self, stop_wait_s: float = 60.0, code: str | None = None) -> None:
        self.stop_wait_s = stop_wait_s
        self.code = code  # the code snapshot the stage runs (first on PYTHONPATH), on every requeue
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"stop_wait_s": self.stop_wait_s, "code": self.code}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.get("stop_wait_s", 60.0), state.get("code"))

    def __call__(self, argv: list[str], workdir: str) -> int:
        env = self._environment()
        exe = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        print(f"[secvit] running in {workdir}: {shlex.join(argv)}", flush=True)
        # its own process group: USR2 reaches the stage and every process it starts (one per GPU)
        # the stage ignores the stop signals until it listens for them (training does: secvit.engine.distributed)
        self._process = subprocess.Popen([exe, *argv[1:]], cwd=workdir, env=env, preexec_fn=ignore_stop_signals, start_new_session=True)
        for signum in (signal.SIGTERM, signal.SIGUSR1):  # USR2: submitit's handler calls checkpoint()
            signal.signal(signum, self._on_stop_signal)
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
        self._stop_stage()
        return submitit.helpers.DelayedSubmission(StageJob(self.stop_wait_s, self.code), argv, workdir)

    def _stop_stage(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        print(f"[secvit] asking the stage to checkpoint and stop (USR2; waiting up to {self.stop_wait_s:.0f} s)", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, STOP_SIGNAL)
        deadline = time.monotonic() + self.stop_wait_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        code = process.poll()
        print(f"[secvit] stage {'still running' if code is None else f'exited with status {code}'}; requeueing", flush=True)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """TERM or USR1 in the job's process: the stage saves and stops; then task 0 requeues the job if SLURM
        still runs it (a signal that ends nothing), and otherwise leaves the job to SLURM (cancelled: it ends;
        preempted: SLURM requeues it; timed out: the checkpoint stays for the next submission)."""
        print(f"[secvit] {signal.Signals(signum).name} received", flush=True)
        self._stop_stage()
        env = submitit.JobEnvironment()
        if env.global_rank != 0:
            return
        state = subprocess.run(["squeue", "-h", "-j", env.job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if state != "RUNNING":
            print(f"[secvit] the job is {state or 'gone'}: SLURM ends or requeues it", flush=True)
            return
        done = subprocess.run(["scontrol", "requeue", env.job_id], capture_output=True, text=True)
        print(f"[secvit] requeued job {env.job_id}" if done.returncode == 0 else f"[secvit] scontrol requeue failed: {done.stderr.strip()}", flush=True)

    def _environment(self) -> dict[str, str]:
        """This job's environment, with torch.distributed set from SLURM for multi-task jobs."""
        tasks = int(os.environ.get("SLURM_NTASKS", "1"))
        if tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        else:
            for name in DIST_VARS:
                os.environ.pop(name, None)
        env = stage_env()
        env[EXECUTOR_VAR] = "local"  # the stage runs here, in this job: never as a job of its own
        env["PYTHONUNBUFFERED"] = "1"
        if self.code:  # the snapshot's package before the working tree's (an editable install comes after PYTHONPATH)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.code, env.get("PYTHONPATH")]))
            env["PYTHONSAFEPATH"] = "1"  # nor the working directory first, where a stage runs `python -m ...`
        if "SLURM_CPUS_PER_TASK" in env:
            env.setdefault("OMP_NUM_THREADS", env["SLURM_CPUS_PER_TASK"])
        return env

    @staticmethod
    def _wait_to_be_killed(seconds: float = 120.0) -> None:
        """The stage was terminated or stopped on request: SLURM is cancelling or requeueing this job and
        kills us next. Waiting keeps submitit from recording a failure for a job that will run again."""
        print("[secvit] stage command terminated or stopped; waiting for SLURM to end this job", flush=True)
        time.sleep(seconds)


def submit(argv: list[str], workdir: Path, settings: SlurmConfig, name: str, folder: Path, dependencies: Iterable[str] = (),
           code: Path | None = None) -> submitit.Job:
    """Submit ``argv`` (run in ``workdir``) as one SLURM job named ``name`` with a job's resolved ``settings``,
    running the code snapshot ``code`` if given (else the working tree); returns the submitit job."""
    executor = make_executor(settings, name, folder, dependencies, code)
    stop_wait_s = max(5.0, 0.75 * settings.signal_delay_s)  # then requeued, saved or not
    try:
        return executor.submit(StageJob(stop_wait_s, str(code) if code else None), list(argv), str(workdir))
    except Exception as e:  # sbatch refused the job: unknown partition, account, ...
        lines = str(e).strip().splitlines()
        raise SecvitError(f"sbatch refused job {name}: {lines[-1] if lines else type(e).__name__}") from None


# ---- one stage command through SLURM (`secvit pretrain ... --executor slurm`)


def stage_argv(command: str, options: dict[str, Any]) -> list[str]:
    """``secvit <command> --key value ...`` for the options that are set."""
    argv = ["secvit", command]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def submit_and_wait(command: str, options: dict[str, Any], poll_s: float = 5.0) -> str:
    """Run ``secvit <command> <options>`` in this directory as a SLURM job, show its state live, wait.
    ``options`` holds ``profile`` and ``params``. The job has the settings of the study's stage that the
    command runs (its kind's, profile's and run's), or of the command's kind for a run outside the study.

    Returns the job id. If the job does not complete, prints its log tail to stderr and raises
    :class:`SecvitError` naming the job and its state.
    """
    profile = options["profile"]
    study = load_study(options["params"])
    stage = study.find(profile, command, options)
    if stage is not None:
        refuse_unsubmittable(study, [stage], Path(options["params"]))
        name, settings = stage.name, study.slurm.for_stage(stage)
    else:
        name, settings = f"{command}@{profile}", study.slurm.for_job(command, profile)
    argv = stage_argv(command, options)
    job = submit(argv, Path.cwd(), settings, name, Path(study.slurm.folder) / profile / "%j")
    console.print(f"submitted SLURM job {job.job_id}: {shlex.join(argv)}\nlogs: {job.paths.stdout} and .err")
    row = Tracked(name, job)
    try:
        watch([row], f"secvit {command} on SLURM", lambda rows: rows[0].finished(), poll_s)
    except KeyboardInterrupt:
        raise SecvitError(f"interrupted; SLURM job {job.job_id} keeps running (scancel {job.job_id} stops it)") from None
    if row.state != "COMPLETED":
        print(log_tail(job), file=sys.stderr)
        raise SecvitError(f"SLURM job {job.job_id} ({name}) ended {row.state}; the end of its log is above")
    console.print(f"SLURM job {job.job_id} completed (run time {row.elapsed})")
    return str(job.job_id)
