"""SLURM dispatch on the real local cluster (slurm/cluster.sh): stage jobs, requeue, DAG, failures.

Each test works in its own scratch git copy of the project, with the submitit job folder
(runs/slurm/) inside it and a reduced smoke profile so a job takes well under a minute.
"""

from __future__ import annotations

import functools
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import ROOT, scratch_repo, tool_env
from conftest import invoke as invoke_tool

from secvit.data.synthetic import make_imagenet

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
# the tests that run jobs take a minute or more each: outside the quick subset (-m "not slow"); the settings test is in it


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip unless the SLURM client tools are installed and the local cluster is up."""
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM client tools (sinfo) are not installed; run slurm/cluster.sh start")
    status = subprocess.run([str(ROOT / "slurm/cluster.sh"), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip("the local SLURM cluster is not up; run slurm/cluster.sh start")


# SLURM commands get a time limit: a hung job must fail the test, not block it.
invoke = functools.partial(invoke_tool, timeout=300)


def scratch_copy(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """A scratch git copy of the working tree's project files (tracked and new) with ``params`` changed."""
    return scratch_repo(ROOT, dest, untracked=True, params=params)


SMALL = {"smoke.data.generate.imagenet.train_per_class": 32, "smoke.data.generate.imagenet.val_per_class": 8}


@pytest.fixture
def scratch(tmp_path) -> Any:
    """Factory of scratch projects under this test's tmp dir: ``scratch(name, params)``.
    Jobs of these projects that are still queued or running at the end are cancelled."""
    made: list[Path] = []

    def make(name: str = "repo", params: dict[str, Any] | None = None) -> Path:
        made.append(scratch_copy(tmp_path / name, {**SMALL, **(params or {})}))
        return made[-1]

    yield make
    leftover = [job for repo in made for job in job_ids(repo)]
    if leftover:
        subprocess.run(["scancel", *leftover], capture_output=True)


def job_fields(job_id: str) -> dict[str, str]:
    out = invoke(ROOT, "scontrol", "show", "job", "-o", str(job_id)).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_ids(repo: Path, profile: str = "smoke") -> list[str]:
    """Ids of the jobs whose folders exist under the scratch project's job folder."""
    folder = repo / "runs/slurm" / profile
    return sorted((p.name for p in folder.glob("[0-9]*") if p.is_dir()), key=int) if folder.exists() else []


def _read_until(stream, text: bytes, timeout: float) -> str:
    """What a process wrote to ``stream`` up to and including ``text`` (a prompt need not end its line)."""
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 4096) if ready else b""
        if not chunk:
            raise AssertionError(f"no {text!r} after {timeout:.0f}s: {seen.decode(errors='replace')[-2000:]}")
        seen += chunk
    return seen.decode(errors="replace")


#: how long a test waits for a job to start running: the test cluster is shared by the test modules that run at
#: once (tests/test_slurm_stops.py's jobs can hold its CPUs for minutes), so a job may queue that long
QUEUE_S = 600


def wait_for(predicate, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def metrics(repo: Path, run_name: str = "secvit_tiny") -> dict[str, Any]:
    return json.loads((repo / "results/smoke/pretrain" / run_name / "metrics.json").read_text())


# ---- a) one stage command through --executor slurm


def smoke_imagenet(repo: Path, train_per_class: int = 32) -> None:
    """The smoke profile's generated ImageNet at the scratch project's sizes (what `secvit data` writes), made here:
    these tests are about the jobs, not the data stage (test_dvc_repro_runs_gpu_stages_as_jobs_with_executor_variable
    runs that one)."""
    make_imagenet(repo / "data/smoke/imagenet", num_classes=4, train_per_class=train_per_class, val_per_class=8, size=48, seed=0)


@pytest.mark.slow
def test_pretrain_and_evaluate_with_slurm_executor(scratch):
    repo = scratch()
    smoke_imagenet(repo)
    result = invoke(repo, "secvit", "pretrain", "--profile", "smoke", "--model", "secvit_tiny", "--executor", "slurm")
    out = result.stdout + result.stderr
    job = re.search(r"submitted SLURM job (\d+)", out).group(1)
    assert f"SLURM job {job} completed" in out
    assert job_fields(job)["JobState"] == "COMPLETED"
    found = metrics(repo)
    assert found["epochs"] == 2 and found["world_size"] == 1 and 0 <= found["best_top1"] <= 100
    assert (repo / "runs/smoke/pretrain/secvit_tiny/last.pth").is_file()
    log = (repo / f"runs/slurm/smoke/{job}/{job}_0_log.out").read_text()
    assert "secvit pretrain --profile smoke --model secvit_tiny" in log and "Job completed successfully" in log

    invoke(repo, "secvit", "evaluate", "--profile", "smoke", "--model", "secvit_tiny", "--executor", "slurm")
    evaluated = json.loads((repo / "results/smoke/pretrain/secvit_tiny/eval.json").read_text())
    assert evaluated["top1"] == found["best_top1"] and evaluated["weights"] == found["best_weights"]  # best.pth


# ---- b) requeued mid-epoch: resumes and ends bit-identical


def _mid_epoch(last: Path) -> tuple[int, int] | None:
    """(epoch, batch) of a checkpoint saved inside an epoch, else None."""
    if not last.exists():
        return None
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
    except Exception:  # replaced while reading
        return None
    return (state["epoch"], state["batch"]) if state["batch"] > 0 else None


def pretrain_requeued_mid_epoch(repo: Path, checkpoint_s: float, finish_s: float) -> tuple[str, str, dict[str, str]]:
    """Run ``secvit pretrain --executor slurm`` in ``repo``, ``scontrol requeue`` its running job once a
    mid-epoch checkpoint exists, and wait for the command; assert that the job restarted once and
    resumed. Returns the job id, task 0's stderr log and the job's fields at the requeue."""
    cli = subprocess.Popen(
        ["secvit", "pretrain", "--profile", "smoke", "--model", "secvit_tiny", "--executor", "slurm"],
        cwd=repo, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        job = wait_for(lambda: job_ids(repo)[-1:], 60, "the CLI's job")[0]
        wait_for(lambda: _mid_epoch(repo / "runs/smoke/pretrain/secvit_tiny/last.pth"), checkpoint_s, "a mid-epoch checkpoint")
        fields = job_fields(job)
        assert fields["JobState"] == "RUNNING", fields
        invoke(repo, "scontrol", "requeue", job)
        out, _ = cli.communicate(timeout=finish_s)
    finally:
        cli.kill()
    assert cli.returncode == 0, out[-3000:]
    assert int(job_fields(job)["Restarts"]) == 1 and "requeued x1" in out
    log = (repo / f"runs/slurm/smoke/{job}/{job}_0_log.err").read_text()
    assert re.search(r"resuming secvit_tiny from\s", log), log[-2000:]
    return job, log, fields


def _positions(log: str, what: str) -> list[str]:
    """The "epoch E, batch B" of each line of the stage log that says ``what`` (rich wraps long lines)."""
    flat = " ".join(log.split())
    return re.findall(rf"{what}.*?(epoch \d+, batch \d+)", flat)


@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_and_resumes_to_identical_weights(scratch):
    """SLURM's pre-timeout USR2, four times (each a time-out for submitit: the limit is short; one more than submitit's
    default of three): each time the run saves a checkpoint after the step in flight, the job is requeued and resumes
    from that checkpoint; it ends with the weights of an uninterrupted run. Mid-epoch checkpoints come from the signal
    only."""
    run_key = "pretrain@smoke-secvit_tiny"
    params = {
        "smoke.data.generate.imagenet.train_per_class": 64,  # 8 steps per epoch, 16 in all
        "smoke.pretrain_speed.checkpoint_every_steps": 0,  # no periodic mid-epoch checkpoint
        "slurm.runs": {run_key: {"timeout_min": 5, "signal_delay_s": 30}},  # this run only
    }
    ref, req = scratch("reference", params), scratch("requeued", params)
    for repo in (ref, req):
        smoke_imagenet(repo, train_per_class=64)

    from secvit.orchestrate.slurm import stage_argv, submit
    from secvit.orchestrate.slurm_watch import job_state, log_tail
    from secvit.study import load_study

    argv = stage_argv("pretrain", {"profile": "smoke", "model": "secvit_tiny"})
    study = load_study(req / "params.yaml")
    settings = study.slurm.for_stage(study[run_key])  # the run's own settings, as the DAG's scheduler resolves them
    reference = submit(argv, ref, settings, "reference", ref / "runs/slurm/smoke/%j")
    job = submit(argv, req, settings, "requeued", req / "runs/slurm/smoke/%j")
    script = Path(job.paths.submission_file).read_text()
    assert "#SBATCH --time=5" in script and "#SBATCH --signal=USR2@30" in script  # the per-run settings
    err = Path(job.paths.stderr)
    signals = 0
    try:
        while signals < 4:  # the first run and three requeued ones, each stopped once it trains
            wait_for(lambda: err.exists() and len(_positions(err.read_text(), "training secvit_tiny from")) > signals or job_state(job.job_id) == "COMPLETED", 150, f"run {signals + 1} to train", step=0.5)
            if job_state(job.job_id) == "COMPLETED":
                break
            invoke(req, "scancel", "--signal=USR2", job.job_id)
            signals += 1
            wait_for(lambda: len(_positions(err.read_text(), "saved")) >= signals or job_state(job.job_id) == "COMPLETED", 60, "the checkpoint on the signal", step=0.5)
        wait_for(lambda: job_state(job.job_id) == "COMPLETED", 240, "the requeued job to complete", step=1)
        wait_for(lambda: job_state(reference.job_id) not in {"PENDING", "RUNNING"}, 120, "the reference job", step=1)
    finally:
        subprocess.run(["scancel", job.job_id, reference.job_id], capture_output=True)
    assert job_state(reference.job_id) == "COMPLETED", log_tail(reference)
    log = err.read_text()
    saved, resumed = _positions(log, "saved"), _positions(log, "resuming secvit_tiny from")
    assert int(job_fields(job.job_id)["Restarts"]) >= 4 and len(saved) >= 4, log[-3000:]
    assert resumed == saved  # each requeued run resumed from the checkpoint written on the signal
    assert any(not p.endswith("batch 0") for p in saved)  # mid-epoch: only the signal writes those here
    out = Path(job.paths.stdout).read_text()
    assert out.count("Calling checkpoint method") >= 4 and "timed-out too many times" not in out  # submitit alone stops at 3

    a, b = metrics(ref), metrics(req)
    for key in ("epochs", "best_top1", "best_epoch", "final_top1", "final_top1_ema", "train_loss"):
        assert a[key] == b[key], key
    best_a = torch.load(ref / "runs/smoke/pretrain/secvit_tiny/best.pth", map_location="cpu", weights_only=True)
    best_b = torch.load(req / "runs/smoke/pretrain/secvit_tiny/best.pth", map_location="cpu", weights_only=True)
    assert best_a["model"].keys() == best_b["model"].keys() and best_a["weights"] == best_b["weights"]
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])


# ---- c) the DAG: parallel jobs, dependencies, DVC commits, re-attach


DAG_TARGETS = ["data-smoke@coco", "data-smoke@ade20k", "evaluate@smoke-secvit_tiny"]
DAG_STAGES = {"data-smoke@coco", "data-smoke@ade20k", "data-smoke@imagenet", "pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"}


def node_cpus() -> int:
    return int(invoke(ROOT, "sinfo", "-h", "-o", "%c").stdout.split()[0])


def dvc_status(repo: Path, targets: list[str]) -> dict[str, Any]:
    """``dvc status --with-deps --json``: the changed stages among targets and upstream."""
    return json.loads(invoke(repo, "dvc", "status", "--with-deps", "--json", *targets).stdout)


def _interval(job_id: str) -> tuple[float, float]:
    fields = job_fields(job_id)
    parse = lambda s: time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
    return parse(fields["StartTime"]), parse(fields["EndTime"])


@pytest.mark.slow
def test_dag_runs_stale_stages_in_parallel_and_commits_them(scratch):
    repo = scratch()
    from secvit.orchestrate.dag import stale_stages
    from secvit.orchestrate.slurm_dag import repro_slurm

    assert {p.name for p in stale_stages(repo, DAG_TARGETS)} == DAG_STAGES == set(dvc_status(repo, DAG_TARGETS))
    # Submit from a first orchestrator, interrupt it once every job is queued, then re-attach.
    script = f"from pathlib import Path; from secvit.orchestrate.slurm_dag import repro_slurm; repro_slurm('smoke', Path('.'), {DAG_TARGETS!r}, 1.0)"
    first = subprocess.Popen([sys.executable, "-c", script], cwd=repo, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    jobs_file = repo / "runs/slurm/smoke/jobs.json"
    try:
        wait_for(lambda: jobs_file.exists() and len(json.loads(jobs_file.read_text())["stages"]) == 5, 120, "five submitted jobs")
        time.sleep(2)  # into the wait loop
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode != 0 and "re-attach" in out, out[-2000:]
    submitted = {name: rec["job_id"] for name, rec in json.loads(jobs_file.read_text())["stages"].items()}

    tables = repro_slurm("smoke", repo, DAG_TARGETS, poll_s=1.0)
    assert tables == repo.resolve() / "results/smoke/tables.md"
    recorded = json.loads(jobs_file.read_text())["stages"]
    assert {n: r["job_id"] for n, r in recorded.items()} == submitted  # re-attached, nothing submitted twice
    assert all(r["committed"] for r in recorded.values())
    assert job_ids(repo) == sorted(submitted.values(), key=int)

    spans = {name: _interval(job) for name, job in submitted.items()}
    overlapping = [(a, b) for a in spans for b in spans if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    if node_cpus() >= 2:  # 1-CPU jobs: two fit on the node at once
        assert overlapping, spans  # two independent stages ran at the same time
    assert spans["pretrain@smoke-secvit_tiny"][0] >= spans["data-smoke@imagenet"][1]  # afterok
    assert spans["evaluate@smoke-secvit_tiny"][0] >= spans["pretrain@smoke-secvit_tiny"][1]
    script = (repo / f"runs/slurm/smoke/{submitted['evaluate@smoke-secvit_tiny']}").glob("*_submission.sh")
    assert f"--dependency=afterok:{submitted['pretrain@smoke-secvit_tiny']}" in next(script).read_text()

    for args in (DAG_TARGETS, ["--with-deps", *DAG_TARGETS]):
        status = invoke(repo, "dvc", "status", *args)
        assert "up to date" in status.stdout, status.stdout
    assert stale_stages(repo, DAG_TARGETS) == [] and dvc_status(repo, DAG_TARGETS) == {}
    assert (repo / "results/smoke/pretrain/secvit_tiny/eval.json").is_file()

    # A changed upstream stage makes everything downstream stale (dvc status lists only the changed one).
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("train_per_class: 32", "train_per_class: 16", 1))
    assert set(dvc_status(repo, DAG_TARGETS)) == {"data-smoke@imagenet"}
    assert [p.name for p in stale_stages(repo, DAG_TARGETS)] == ["data-smoke@imagenet", "pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"]


def _shim(folder: Path, log: Path) -> dict[str, str]:
    """An environment whose SLURM commands are logged to ``log`` (one line per call) and then run."""
    folder.mkdir()
    for name in ("squeue", "scontrol", "sacct", "sbatch", "scancel"):
        real = shutil.which(name)
        if real:
            (folder / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexec {real} "$@"\n')
            (folder / name).chmod(0o755)
    env = tool_env()
    return {**env, "PATH": f"{folder}:{env['PATH']}"}


def _orchestrator(repo: Path, targets: list[str], env: dict[str, str] | None = None, profile: str = "paper") -> subprocess.Popen:
    script = f"from pathlib import Path; from secvit.orchestrate.slurm_dag import repro_slurm; repro_slurm({profile!r}, Path('.'), {targets!r})"
    return subprocess.Popen([sys.executable, "-c", script], cwd=repo, env=env or tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_rerun_reattaches_to_a_running_job_and_an_unchanged_always_changed_stage_reruns_nothing(scratch, tmp_path):
    """While pretraining runs, `secvit repro` again re-attaches to its job (same id, no cancel, nothing submitted
    twice), with one squeue per poll; the always_changed data stage runs again and, its output unchanged,
    lets nothing downstream run. A per-run SLURM setting reaches that run's job only."""
    targets = ["evaluate@paper-secvit_tiny"]
    pretrain, evaluate, data = "pretrain@paper-secvit_tiny", "evaluate@paper-secvit_tiny", "data-paper@imagenet"
    smoke = yaml.safe_load((ROOT / "params.yaml").read_text())["smoke"]
    repo = scratch(params={  # the paper profile's DAG (its data stages are always_changed) at smoke sizes
        "paper.data.imagenet": "data/smoke/imagenet",
        "paper.data.expected.imagenet": {"classes": 4, "train": 256, "val": 32},
        "paper.pretrain": {**smoke["pretrain"], "epochs": 2},
        "paper.pretrain_speed": smoke["pretrain_speed"],
        "paper.pretrain_runs.secvit_tiny": {"drop_path": 0.0},
        "paper.device": "cpu",  # the paper profile's stages on this CPU (they are meant for GPUs)
        "slurm.profiles.paper": {},  # the shipped paper settings ask for a cluster's GPU partition
        "slurm.poll_s": 1.0,
        "slurm.runs": {pretrain: {"timeout_min": 7}},
    })
    make_imagenet(repo / "data/smoke/imagenet", num_classes=4, train_per_class=64, val_per_class=8, size=48, seed=0)
    jobs_file = repo / "runs/slurm/paper/jobs.json"

    def recorded() -> dict[str, dict[str, Any]]:
        return json.loads(jobs_file.read_text())["stages"] if jobs_file.exists() else {}

    def pretraining() -> bool:
        rec = recorded()
        return rec.get(data, {}).get("committed") and pretrain in rec and job_fields(rec[pretrain]["job_id"]).get("JobState") == "RUNNING"

    old_code = repo / "runs/slurm/code/0123456789abcdef0123"  # a snapshot of a month ago that no job runs
    (old_code / "secvit").mkdir(parents=True)
    os.utime(old_code, (time.time() - 30 * 86400,) * 2)
    first = _orchestrator(repo, targets)
    try:
        wait_for(lambda: pretraining() or first.poll() is not None, QUEUE_S, "the data stage committed and the pretraining job running", step=0.5)
        assert first.poll() is None, first.communicate()[0][-3000:]  # the orchestrator runs on
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode != 0 and "re-attach" in out, out[-2000:]
    assert not old_code.exists() and "removed 1 code snapshot(s) that no job runs any more" in " ".join(out.split())
    before = {n: r["job_id"] for n, r in recorded().items()}

    calls = tmp_path / "slurm_calls.log"
    began = time.monotonic()
    second = _orchestrator(repo, targets, _shim(tmp_path / "shim", calls))
    try:
        out, _ = second.communicate(timeout=300)
    finally:
        second.kill()
    seconds = time.monotonic() - began
    assert second.returncode == 0, out[-3000:]
    after = {n: r["job_id"] for n, r in recorded().items()}
    assert "2 job(s) re-attached, 1 submitted: data-paper@imagenet" in " ".join(out.split()), out[-3000:]
    assert (after[pretrain], after[evaluate]) == (before[pretrain], before[evaluate]) and after[data] != before[data]
    assert "cancelling" not in out
    fields = job_fields(after[pretrain])
    assert fields["JobState"] == "COMPLETED" and fields["Restarts"] == "0"  # never cancelled nor requeued
    assert job_ids(repo, "paper") == sorted({*before.values(), after[data]}, key=int)  # nothing submitted twice
    assert all(r["committed"] for r in recorded().values())

    # the watcher: one squeue per poll for all its jobs, never a query per job
    lines = calls.read_text().splitlines()
    polls = [c for c in lines if c.startswith("squeue")]
    assert not [c for c in lines if c.startswith(("scontrol show", "sacct"))], lines
    assert 0 < len(polls) <= seconds / 1.0 + 3, (len(polls), seconds)
    # the jobs still active at each poll, in one query (finished ones drop out of later polls)
    asked = [set(re.search(r"-j (\S+)", c).group(1).split(",")) for c in polls]
    assert max(len(jobs) for jobs in asked) >= 2 and set().union(*asked) == set(after.values()), polls[:5]

    # the per-run setting reached that run's job only
    times = {n: re.search(r"#SBATCH --time=(\d+)", next((repo / "runs/slurm/paper" / j).glob("*_submission.sh")).read_text()).group(1) for n, j in after.items()}
    assert times == {pretrain: "7", evaluate: "60", data: "60"}

    # again: the data stage runs (always_changed), its manifest comes out the same, nothing downstream runs
    third = _orchestrator(repo, targets)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out[-3000:]
    flat = " ".join(out.split())
    assert "0 job(s) re-attached, 1 submitted: data-paper@imagenet" in flat, out[-3000:]
    assert f"up to date: {pretrain}" in flat and f"up to date: {evaluate}" in flat
    assert {n: r["job_id"] for n, r in recorded().items() if n != data} == {pretrain: after[pretrain], evaluate: after[evaluate]}
    assert set(dvc_status(repo, targets)) == {data}  # always changed, nothing else

    # one run's recipe value: only that run's stage; a speed option: nothing, and the finished run is not trained again
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edited = json.loads(json.dumps(params))
    edited["paper"]["pretrain_runs"]["secvit_tiny"]["drop_path"] = 0.05
    (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    status = json.loads(invoke(repo, "dvc", "status", "--json", pretrain, evaluate).stdout)
    assert list(status) == [pretrain] and "paper.pretrain_runs.secvit_tiny" in json.dumps(status), status
    edited = json.loads(json.dumps(params))
    edited["paper"]["pretrain_speed"].update(channels_last=False, batch_per_device=8, workers=1, checkpoint_every_steps=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    assert set(dvc_status(repo, targets)) == {data}
    found = json.loads((repo / "results/paper/pretrain/secvit_tiny/metrics.json").read_text())
    again = invoke(repo, "secvit", "pretrain", "--profile", "paper", "--model", "secvit_tiny")
    assert "starting over" not in again.stderr and "training secvit_tiny from epoch 3, batch 0" in " ".join(again.stderr.split())
    now = json.loads((repo / "results/paper/pretrain/secvit_tiny/metrics.json").read_text())
    assert {k: now[k] for k in ("epochs", "best_top1", "final_top1", "final_top1_ema", "train_loss")} == {
        k: found[k] for k in ("epochs", "best_top1", "final_top1", "final_top1_ema", "train_loss")
    }


# ---- d) failures


@pytest.mark.slow
def test_failed_job_reports_log_tail_and_exit_code(scratch):
    repo = scratch()  # no data: the stage fails on its model name first
    result = invoke(repo, "secvit", "pretrain", "--profile", "smoke", "--model", "secvit_nope", "--executor", "slurm", check=False)
    job = re.search(r"submitted SLURM job (\d+)", result.stderr).group(1)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: SLURM job {job} ") and "FAILED" in last, last
    tail = result.stderr.split(f"----- stderr of job {job}", 1)[1]
    assert "secvit_nope" in tail  # the stage's own error, from the job log


@pytest.mark.slow
def test_dag_failure_cancels_dependents_and_commits_the_rest(scratch):
    repo = scratch(params={"smoke.pretrain.epochs": "two"})  # pretrain and evaluate reject the params file
    from secvit.orchestrate.slurm_dag import repro_slurm
    from secvit.errors import SecvitError

    with pytest.raises(SecvitError) as failure:
        repro_slurm("smoke", repo, ["data-smoke@coco", "evaluate@smoke-secvit_tiny"], poll_s=1.0)

    jobs = {n: r["job_id"] for n, r in json.loads((repo / "runs/slurm/smoke/jobs.json").read_text())["stages"].items()}
    message = str(failure.value)
    assert message.startswith(f"stage pretrain@smoke-secvit_tiny: SLURM job {jobs['pretrain@smoke-secvit_tiny']} ended FAILED"), message
    assert "1 dependent job(s) cancelled" in message and "\n" not in message
    assert job_fields(jobs["evaluate@smoke-secvit_tiny"])["JobState"] == "CANCELLED"
    assert "up to date" in invoke(repo, "dvc", "status", "data-smoke@coco", "data-smoke@imagenet").stdout
    assert "changed" in invoke(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout


# ---- settings


def test_slurm_settings_and_executor(tmp_path):
    from secvit.errors import SecvitError
    from secvit.orchestrate.slurm import make_executor
    from secvit.study import load_study

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    path = tmp_path / "params.yaml"

    def load(**changes: Any):
        path.write_text(yaml.safe_dump({**params, "slurm": {**params["slurm"], **changes}}))
        study = load_study(path)
        return study, study.slurm

    # the kind layer alone (the shipped paper profile's settings would override it)
    study, cfg = load(stages={"pretrain": {"gpus_per_node": 8, "timeout_min": 4320}, "data": {"mem_gb": 1}}, partition="debug", profiles={})
    executor = make_executor(cfg.for_stage(study["pretrain@paper-secvit_tiny"]), "pretrain@paper-secvit_tiny", tmp_path / "%j", dependencies=["7", "9"])
    p = executor._executor.parameters
    assert (p["gpus_per_node"], p["ntasks_per_node"], p["time"], p["partition"]) == (8, 8, 4320, "debug")
    assert p["srun_args"] == [f"--cpus-per-task={cfg.cpus_per_task}"] and p["signal_delay_s"] == cfg.signal_delay_s
    assert p["additional_parameters"]["dependency"] == "afterok:7:9"
    assert executor._executor.max_num_timeout == cfg.max_requeues == 50  # requeued after 50 time limits, not 3
    data = make_executor(cfg.for_stage(study["data-smoke@coco"]), "data-smoke@coco", tmp_path / "%j")._executor.parameters
    assert data["mem"] == "1GB" and data["ntasks_per_node"] == 1 and "gpus_per_node" not in data
    study, cpu = load(stages={"pretrain": {"tasks_per_node": 2}})
    cpu_ddp = make_executor(cpu.for_stage(study["sweep@smoke-64-8-2-1"]), "p", tmp_path / "%j")._executor.parameters
    assert cpu_ddp["ntasks_per_node"] == 2 and "gpus_per_node" not in cpu_ddp  # several tasks on a CPU-only node
    assert [study[s].kind for s in ("sweep@smoke-64-8-2-1", "evaluate@paper-secvit_base", "tables@smoke")] == ["pretrain", "evaluate", "tables"]
    shipped = load_study(ROOT / "params.yaml")
    tables = make_executor(shipped.slurm.for_stage(shipped["tables@smoke"]), "tables@smoke", tmp_path / "%j")._executor.parameters
    assert "partition" not in tables and "mem" not in tables  # the cluster's defaults, not a test partition

    # per profile, stage kind and run, most specific last
    study, cfg = load(
        stages={"pretrain": {"gpus_per_node": 4}},
        runs={"pretrain@smoke-secvit_tiny": {"timeout_min": 7}, "secvit_small-c64-8-2-1": {"timeout_min": 9}},
        profiles={"paper": {"gpus_per_node": 8, "cpus_per_task": 12, "stages": {"data": {"gpus_per_node": 0}}, "runs": {"secvit_large": {"nodes": 2}}}},
    )
    settings = {
        stage: (r.nodes, r.gpus_per_node, r.cpus_per_task, r.timeout_min)
        for stage in ["pretrain@paper-secvit_large", "evaluate@paper-secvit_large", "pretrain@paper-secvit_base", "data-paper@coco",
                      "detect@paper-secvit_large-mask_rcnn-1x", "pretrain@smoke-secvit_tiny", "pretrain@smoke-sec_swin_tiny",
                      "sweep@smoke-64-8-2-1"]
        for r in [cfg.for_stage(study[stage])]
    }
    assert settings == {
        "pretrain@paper-secvit_large": (2, 8, 12, 60),
        "evaluate@paper-secvit_large": (2, 8, 12, 60),
        "pretrain@paper-secvit_base": (1, 8, 12, 60),
        "data-paper@coco": (1, 0, 12, 60),
        "detect@paper-secvit_large-mask_rcnn-1x": (1, 8, 12, 60),
        "pretrain@smoke-secvit_tiny": (1, 4, 1, 7),
        "pretrain@smoke-sec_swin_tiny": (1, 4, 1, 60),
        "sweep@smoke-64-8-2-1": (1, 4, 1, 9),  # a sweep run by its run key
    }

    for changes, message in [
        ({"gpus": 1}, "unknown setting 'slurm.gpus'"),
        ({"nodes": "two"}, "setting 'slurm.nodes' must be int"),
        ({"stages": {"pretrian": {}}}, "unknown stage kind 'slurm.stages.pretrian'"),
        ({"stages": {"pretrain": {"gpu_per_node": 8}}}, "unknown setting 'slurm.stages.pretrain.gpu_per_node'"),
        ({"cpus_per_task": 0}, "setting 'slurm.cpus_per_task' must be at least 1"),
        ({"tasks_per_node": 0}, "setting 'slurm.tasks_per_node' must be at least 1 or null"),
        ({"profiles": {"papr": {}}}, "unknown profile 'slurm.profiles.papr'"),
        ({"profiles": {"paper": {"poll_s": 5}}}, "'slurm.profiles.paper.poll_s' can only be set for all jobs"),
        ({"runs": {"secvit_large": {"node": 2}}}, "unknown setting 'slurm.runs.secvit_large.node'"),
        ({"profiles": {"paper": {"runs": {"secvit_large": {"nodes": "two"}}}}}, "setting 'slurm.profiles.paper.runs.secvit_large.nodes' must be int"),
    ]:
        with pytest.raises(SecvitError, match=re.escape(message)):
            load(**changes)
    del params["slurm"]["partition"]
    with pytest.raises(SecvitError, match="missing setting 'slurm.partition'"):
        load()


# ---- e) `dvc repro` with SECVIT_EXECUTOR=slurm: the stage commands of dvc.yaml become jobs


@pytest.mark.slow
def test_dvc_repro_runs_gpu_stages_as_jobs_with_executor_variable(scratch):
    repo = scratch(params={"smoke.pretrain.epochs": 1})
    env = {**tool_env(), "SECVIT_EXECUTOR": "slurm"}
    result = subprocess.run(["dvc", "repro", "pretrain@smoke-secvit_tiny"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert job_ids(repo) == [job := re.search(r"submitted SLURM job (\d+)", out).group(1)]  # data ran here, pretrain as one job
    assert f"SLURM job {job} completed" in out and job_fields(job)["JobState"] == "COMPLETED"
    log = (repo / f"runs/slurm/smoke/{job}/{job}_0_log.out").read_text()
    assert "secvit pretrain --profile smoke --model secvit_tiny" in log and "Job completed successfully" in log
    assert "submitted SLURM job" not in log  # inside the job the stage ran locally: no job of its own
    assert metrics(repo)["epochs"] == 1 and metrics(repo)["world_size"] == 1
    assert "up to date" in invoke(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout  # DVC recorded the job's outputs


# ---- f) several tasks per job: one DDP run (gloo on CPU-only nodes), requeued and resumed


@pytest.mark.slow
def test_two_task_job_trains_ddp_with_the_global_batch_and_resumes_after_requeue(scratch):
    if node_cpus() < 2:
        pytest.skip("the node has fewer than 2 CPUs for 2 tasks")
    params = {"smoke.pretrain.epochs": 1, "smoke.pretrain_speed.checkpoint_every_steps": 2, "slurm.stages": {"pretrain": {"tasks_per_node": 2}}}
    repo = scratch(params=params)
    make_imagenet(repo / "data/smoke/imagenet", num_classes=4, train_per_class=48, val_per_class=8, size=48, seed=0)  # 6 steps of 2 x 2 x 8
    job, _, fields = pretrain_requeued_mid_epoch(repo, checkpoint_s=240, finish_s=300)
    assert fields["NumTasks"] == "2", fields
    assert (repo / f"runs/slurm/smoke/{job}/{job}_1_log.out").is_file()  # task 1 ran too
    found = metrics(repo)
    assert found["world_size"] == 2 and found["accumulation"] == 2 and found["global_batch"] == 32
    assert found["epochs"] == 1 and 0 <= found["best_top1"] <= 100


# ---- one orchestrator per study, jobs that run the code they were planned with, nothing cancelled without asking

DATA_TARGETS = ["data-smoke@coco", "data-smoke@ade20k"]


@pytest.mark.slow
def test_two_orchestrators_started_at_once_submit_each_stage_once(scratch):
    """Two `secvit repro` on one study at once: one plans, submits and commits; the other refuses in one line,
    naming the holder and how to watch. A lock left by a dead holder is taken over."""
    from secvit.orchestrate.slurm_dag import repro_slurm

    repo = scratch(params={"slurm.poll_s": 1.0})
    both = [_orchestrator(repo, DATA_TARGETS, profile="smoke") for _ in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in both]
    finally:
        for p in both:
            p.kill()
    (winner, won), (loser, lost) = sorted(zip(both, outs), key=lambda po: po[0].returncode)
    assert winner.returncode == 0 and loser.returncode != 0, outs
    last = lost.strip().splitlines()[-1]
    assert f"another `secvit repro` runs the smoke profile of this study on {socket.gethostname()} (pid {winner.pid}, since " in last, last
    assert "watch them with `secvit repro status --profile smoke`" in last and "changed nothing" in last
    recorded = json.loads((repo / "runs/slurm/smoke/jobs.json").read_text())["stages"]
    assert set(recorded) == set(DATA_TARGETS) and all(r["committed"] for r in recorded.values())
    assert job_ids(repo) == sorted((r["job_id"] for r in recorded.values()), key=int)  # each stage submitted exactly once
    assert "up to date" in invoke(repo, "dvc", "status", *DATA_TARGETS).stdout
    # the holder died without releasing (kill -9 leaves its file): the kernel dropped its flock, the next one takes over
    (repo / "runs/slurm/smoke/orchestrator.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 1, "started": "then"}))
    assert repro_slurm("smoke", repo, DATA_TARGETS, poll_s=1.0) == repo.resolve() / "results/smoke/tables.md"


@pytest.mark.slow
def test_a_result_is_not_committed_against_code_edited_while_its_job_ran(scratch):
    """The job runs a snapshot of the code it was planned with; a dependency edited while it runs leaves its stage
    stale (one line naming the file), not committed against code that did not produce it."""
    repo = scratch(params={"slurm.poll_s": 1.0, "slurm.stages": {"data": {"setup": ["sleep 10"]}}})
    stage = "data-smoke@coco"
    jobs_file = repo / "runs/slurm/smoke/jobs.json"
    orchestrator = _orchestrator(repo, [stage], profile="smoke")
    try:
        def running() -> str | None:
            rec = json.loads(jobs_file.read_text())["stages"].get(stage) if jobs_file.exists() else None
            return rec and job_fields(rec["job_id"]).get("JobState") == "RUNNING" and rec["job_id"]

        job = wait_for(running, QUEUE_S, "the data job running")
        code = Path(json.loads(jobs_file.read_text())["stages"][stage]["code"])
        edited = repo / "secvit/data/synthetic.py"
        before = edited.read_text()
        edited.write_text(before + "\n# edited while the job ran\n")
        out, _ = orchestrator.communicate(timeout=240)
    finally:
        orchestrator.kill()
    assert orchestrator.returncode != 0, out[-3000:]
    flat = " ".join(out.split())
    assert f"stage {stage} stays stale: changed since job {job} was submitted (secvit/data/synthetic.py); its result is not committed" in flat, out[-3000:]
    assert f"1 stage(s) stay stale, not committed: {stage}" in flat
    assert job_fields(job)["JobState"] == "COMPLETED"
    lock = yaml.safe_load((repo / "dvc.lock").read_text()) if (repo / "dvc.lock").exists() else None
    assert stage not in (lock or {}).get("stages", {})
    assert stage in dvc_status(repo, [stage])
    # what the job ran: the snapshot, first on its PYTHONPATH (requeues run the same script), holding the code as planned
    script = next((repo / f"runs/slurm/smoke/{job}").glob("*_submission.sh")).read_text()
    assert f"export PYTHONPATH={code}" in script and "PYTHONSAFEPATH=1" in script
    assert (code / "secvit/data/synthetic.py").read_text() == before
    assert json.loads((code / "secvit/CODE_VERSION.json").read_text())["git_dirty"] is False


@pytest.mark.slow
def test_changed_running_jobs_are_cancelled_only_when_asked(scratch):
    """An edit of a running job's code: `--dry-run` says what each stage would get and what the job has spent;
    without a terminal the command refuses unless told; on one it asks, and a no lets the job run;
    --cancel-changed cancels and resubmits."""
    repo = scratch(params={"slurm.poll_s": 1.0, "slurm.stages": {"data": {"setup": ["sleep 300"]}}})
    stage = "data-smoke@coco"
    jobs_file = repo / "runs/slurm/smoke/jobs.json"

    def job_of() -> str | None:
        return json.loads(jobs_file.read_text())["stages"].get(stage, {}).get("job_id") if jobs_file.exists() else None

    first = _orchestrator(repo, [stage], profile="smoke")
    try:
        job = wait_for(lambda: job_of() and job_fields(job_of()).get("JobState") == "RUNNING" and job_of(), QUEUE_S, "the data job running")
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    finally:
        first.kill()
    (repo / "secvit/data/synthetic.py").write_text((repo / "secvit/data/synthetic.py").read_text() + "\n# a comment\n")

    def secvit(*args: str) -> subprocess.CompletedProcess:  # no terminal
        return subprocess.run(["secvit", "repro", stage, "--executor", "slurm", *args], cwd=repo, env=tool_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)

    plan = secvit("--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    line = next(x for x in plan.stdout.splitlines() if x.startswith(f"{stage}:"))
    assert re.match(rf"{re.escape(stage)}: leave job {job} running \(RUNNING [\d:-]+, [\d.]+ device-hours spent\); the stage stays stale "
                    rf"\(changed since job {job} was submitted: dependency secvit/data; --cancel-changed cancels and resubmits it\)", line), line
    assert "nothing was submitted or cancelled" in plan.stdout
    refused = secvit()
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert f"{stage}: {job}" in last and "device-hours" in last and "give --cancel-changed" in last and "--keep-changed" in last, last
    assert job_of() == job and job_fields(job)["JobState"] == "RUNNING" and job_ids(repo) == [job]  # nothing cancelled or submitted

    # on a terminal: the question, with what the job has spent; a no leaves it running and submits nothing
    terminal, side = pty.openpty()
    asked = subprocess.Popen(["secvit", "repro", stage, "--executor", "slurm"], cwd=repo, env=tool_env(), stdin=side,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(side)
    try:
        question = _read_until(asked.stdout, b"[y/N]", 120)
        os.write(terminal, b"n\n")
        time.sleep(3)  # three polls
        assert asked.poll() is None and job_of() == job and job_fields(job)["JobState"] == "RUNNING" and job_ids(repo) == [job]
        asked.send_signal(signal.SIGINT)
        asked.communicate(timeout=60)
    finally:
        asked.kill()
        os.close(terminal)
    flat = " ".join(question.split())
    assert f"{stage}: {job}" in flat and "device-hours" in flat and "Cancel and resubmit them?" in flat, flat[-2000:]

    again = subprocess.Popen(["secvit", "repro", stage, "--executor", "slurm", "--cancel-changed"], cwd=repo, env=tool_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        new = wait_for(lambda: job_of() != job and job_of(), 120, "the stage resubmitted")
        assert wait_for(lambda: job_fields(job).get("JobState") == "CANCELLED", 60, "the changed job cancelled")
        again.send_signal(signal.SIGINT)
        out, _ = again.communicate(timeout=60)
    finally:
        again.kill()
    assert f"cancelling SLURM job {job} ({stage}, RUNNING): the stage changed since it was submitted: dependency secvit/data" in " ".join(out.split())
    assert job_ids(repo) == [job, new]
