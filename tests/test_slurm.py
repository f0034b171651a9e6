"""SLURM dispatch on the real local cluster (slurm/cluster.sh): stage jobs, requeue, DAG, failures.

Each test works in its own scratch git copy of the project, with the submitit job folder
(runs/slurm/) inside it and a reduced smoke profile so a job takes well under a minute.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import ROOT, scratch_repo, tool_env
from conftest import run as run_tool

from secvit.data.synthetic import make_imagenet

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip unless the SLURM client tools are installed and the local cluster is up."""
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM client tools (sinfo) are not installed; run slurm/cluster.sh start")
    status = subprocess.run([str(ROOT / "slurm/cluster.sh"), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip("the local SLURM cluster is not up; run slurm/cluster.sh start")


# SLURM commands get a time limit: a hung job must fail the test, not block it.
run = functools.partial(run_tool, timeout=300)


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
    out = run(ROOT, "scontrol", "show", "job", "-o", str(job_id)).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def job_ids(repo: Path, profile: str = "smoke") -> list[str]:
    """Ids of the jobs whose folders exist under the scratch project's job folder."""
    folder = repo / "runs/slurm" / profile
    return sorted((p.name for p in folder.glob("[0-9]*") if p.is_dir()), key=int) if folder.exists() else []


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


def test_pretrain_and_evaluate_with_slurm_executor(scratch):
    repo = scratch()
    run(repo, "secvit", "data", "--profile", "smoke", "--dataset", "imagenet")
    result = run(repo, "secvit", "pretrain", "--profile", "smoke", "--model", "secvit_tiny", "--executor", "slurm")
    out = result.stdout + result.stderr
    job = re.search(r"submitted SLURM job (\d+)", out).group(1)
    assert f"SLURM job {job} completed" in out
    assert job_fields(job)["JobState"] == "COMPLETED"
    found = metrics(repo)
    assert found["epochs"] == 2 and found["world_size"] == 1 and 0 <= found["best_top1"] <= 100
    assert (repo / "runs/smoke/pretrain/secvit_tiny/last.pth").is_file()
    log = (repo / f"runs/slurm/smoke/{job}/{job}_0_log.out").read_text()
    assert "secvit pretrain --profile smoke --model secvit_tiny" in log and "Job completed successfully" in log

    run(repo, "secvit", "evaluate", "--profile", "smoke", "--model", "secvit_tiny", "--executor", "slurm")
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
        run(repo, "scontrol", "requeue", job)
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


def test_time_limit_signal_checkpoints_requeues_and_resumes_to_identical_weights(scratch):
    """SLURM's pre-timeout USR2, five times (each a time-out for submitit: the limit is short): each time the
    run saves a checkpoint after the step in flight, the job is requeued and resumes from that checkpoint;
    it ends with the weights of an uninterrupted run. Mid-epoch checkpoints come from the signal only."""
    run_key = "pretrain@smoke-secvit_tiny"
    params = {
        "smoke.data.generate.imagenet.train_per_class": 64,  # 8 steps per epoch, 16 in all
        "smoke.pretrain_speed.checkpoint_every_steps": 0,  # no periodic mid-epoch checkpoint
        "slurm.runs": {run_key: {"timeout_min": 5, "signal_delay_s": 30}},  # this run only
    }
    ref, req = scratch("reference", params), scratch("requeued", params)
    run(ref, "secvit", "data", "--profile", "smoke", "--dataset", "imagenet")
    shutil.copytree(ref / "data", req / "data")
    shutil.copytree(ref / "results", req / "results")

    from secvit.orchestrate.slurm import job_state, load_slurm_config, log_tail, stage_argv, submit

    argv = stage_argv("pretrain", {"profile": "smoke", "model": "secvit_tiny"})
    cfg = load_slurm_config(req / "params.yaml")
    reference = submit(argv, ref, cfg, "reference", "pretrain", ref / "runs/slurm/smoke/%j", profile="smoke", stage=run_key)
    job = submit(argv, req, cfg, "requeued", "pretrain", req / "runs/slurm/smoke/%j", profile="smoke", stage=run_key)
    script = Path(job.paths.submission_file).read_text()
    assert "#SBATCH --time=5" in script and "#SBATCH --signal=USR2@30" in script  # the per-run settings
    err = Path(job.paths.stderr)
    signals = 0
    try:
        while signals < 5:  # the first run and four requeued ones, each stopped once it trains
            wait_for(lambda: err.exists() and len(_positions(err.read_text(), "training secvit_tiny from")) > signals or job_state(job.job_id) == "COMPLETED", 150, f"run {signals + 1} to train", step=0.5)
            if job_state(job.job_id) == "COMPLETED":
                break
            run(req, "scancel", "--signal=USR2", job.job_id)
            signals += 1
            wait_for(lambda: len(_positions(err.read_text(), "saved")) >= signals or job_state(job.job_id) == "COMPLETED", 60, "the checkpoint on the signal", step=0.5)
        wait_for(lambda: job_state(job.job_id) == "COMPLETED", 240, "the requeued job to complete", step=1)
        wait_for(lambda: job_state(reference.job_id) not in {"PENDING", "RUNNING"}, 120, "the reference job", step=1)
    finally:
        subprocess.run(["scancel", job.job_id, reference.job_id], capture_output=True)
    assert job_state(reference.job_id) == "COMPLETED", log_tail(reference)
    log = err.read_text()
    saved, resumed = _positions(log, "saved"), _positions(log, "resuming secvit_tiny from")
    assert int(job_fields(job.job_id)["Restarts"]) >= 5 and len(saved) >= 5, log[-3000:]
    assert resumed == saved  # each requeued run resumed from the checkpoint written on the signal
    assert any(not p.endswith("batch 0") for p in saved)  # mid-epoch: only the signal writes those here
    out = Path(job.paths.stdout).read_text()
    assert out.count("Calling checkpoint method") >= 5 and "timed-out too many times" not in out

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
    return int(run(ROOT, "sinfo", "-h", "-o", "%c").stdout.split()[0])


def dvc_status(repo: Path, targets: list[str]) -> dict[str, Any]:
    """``dvc status --with-deps --json``: the changed stages among targets and upstream."""
    return json.loads(run(repo, "dvc", "status", "--with-deps", "--json", *targets).stdout)


def _interval(job_id: str) -> tuple[float, float]:
    fields = job_fields(job_id)
    parse = lambda s: time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
    return parse(fields["StartTime"]), parse(fields["EndTime"])


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
        status = run(repo, "dvc", "status", *args)
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

    first = _orchestrator(repo, targets)
    try:
        wait_for(pretraining, 150, "the data stage committed and the pretraining job running", step=0.5)
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode != 0 and "re-attach" in out, out[-2000:]
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
    status = json.loads(run(repo, "dvc", "status", "--json", pretrain, evaluate).stdout)
    assert list(status) == [pretrain] and "paper.pretrain_runs.secvit_tiny" in json.dumps(status), status
    edited = json.loads(json.dumps(params))
    edited["paper"]["pretrain_speed"].update(channels_last=False, batch_per_device=8, workers=1, checkpoint_every_steps=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    assert set(dvc_status(repo, targets)) == {data}
    found = json.loads((repo / "results/paper/pretrain/secvit_tiny/metrics.json").read_text())
    again = run(repo, "secvit", "pretrain", "--profile", "paper", "--model", "secvit_tiny")
    assert "starting over" not in again.stderr and "training secvit_tiny from epoch 3, batch 0" in " ".join(again.stderr.split())
    now = json.loads((repo / "results/paper/pretrain/secvit_tiny/metrics.json").read_text())
    assert {k: now[k] for k in ("epochs", "best_top1", "final_top1", "final_top1_ema", "train_loss")} == {
        k: found[k] for k in ("epochs", "best_top1", "final_top1", "final_top1_ema", "train_loss")
    }


# ---- d) failures


def test_failed_job_reports_log_tail_and_exit_code(scratch):
    repo = scratch()
    run(repo, "secvit", "data", "--profile", "smoke", "--dataset", "imagenet")
    result = run(repo, "secvit", "pretrain", "--profile", "smoke", "--model", "secvit_nope", "--executor", "slurm", check=False)
    job = re.search(r"submitted SLURM job (\d+)", result.stderr).group(1)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: SLURM job {job} ") and "FAILED" in last, last
    tail = result.stderr.split(f"----- stderr of job {job}", 1)[1]
    assert "secvit_nope" in tail  # the stage's own error, from the job log


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
    assert "up to date" in run(repo, "dvc", "status", "data-smoke@coco", "data-smoke@imagenet").stdout
    assert "changed" in run(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout


# ---- settings


def test_slurm_settings_and_executor(tmp_path):
    from secvit.errors import SecvitError
    from secvit.orchestrate.slurm import load_slurm_config, make_executor, stage_kind

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    path = tmp_path / "params.yaml"

    def load(**changes: Any):
        path.write_text(yaml.safe_dump({**params, "slurm": {**params["slurm"], **changes}}))
        return load_slurm_config(path)

    cfg = load(stages={"pretrain": {"gpus_per_node": 8, "timeout_min": 4320}, "data": {"mem_gb": 1}}, partition="debug")
    executor = make_executor(cfg, "pretrain@paper-secvit_tiny", "pretrain", tmp_path / "%j", dependencies=["7", "9"])
    p = executor._executor.parameters
    assert (p["gpus_per_node"], p["ntasks_per_node"], p["time"], p["partition"]) == (8, 8, 4320, "debug")
    assert p["srun_args"] == [f"--cpus-per-task={cfg.cpus_per_task}"] and p["signal_delay_s"] == cfg.signal_delay_s
    assert p["additional_parameters"]["dependency"] == "afterok:7:9"
    assert executor._executor.max_num_timeout == cfg.max_requeues == 50  # requeued after 50 time limits, not 3
    data = make_executor(cfg, "data-smoke@coco", stage_kind("data-smoke@coco"), tmp_path / "%j")._executor.parameters
    assert data["mem"] == "1GB" and data["ntasks_per_node"] == 1 and "gpus_per_node" not in data
    cpu_ddp = make_executor(load(stages={"pretrain": {"tasks_per_node": 2}}), "p", "pretrain", tmp_path / "%j")._executor.parameters
    assert cpu_ddp["ntasks_per_node"] == 2 and "gpus_per_node" not in cpu_ddp  # several tasks on a CPU-only node
    assert [stage_kind(s) for s in ("sweep@smoke-64-8-2-1", "evaluate@paper-secvit_base", "tables@smoke")] == ["pretrain", "evaluate", "tables"]
    shipped = make_executor(load_slurm_config(ROOT / "params.yaml"), "tables@smoke", "tables", tmp_path / "%j")._executor.parameters
    assert "partition" not in shipped and "mem" not in shipped  # the cluster's defaults, not a test partition

    # per profile, stage kind and run, most specific last
    cfg = load(
        stages={"pretrain": {"gpus_per_node": 4}},
        runs={"pretrain@smoke-secvit_tiny": {"timeout_min": 7}},
        profiles={"paper": {"gpus_per_node": 8, "cpus_per_task": 12, "stages": {"data": {"gpus_per_node": 0}}, "runs": {"secvit_large": {"nodes": 2}}}},
    )
    settings = {
        stage: (r.nodes, r.gpus_per_node, r.cpus_per_task, r.timeout_min)
        for stage, kind, profile in [
            ("pretrain@paper-secvit_large", "pretrain", "paper"),
            ("evaluate@paper-secvit_large", "evaluate", "paper"),
            ("pretrain@paper-secvit_base", "pretrain", "paper"),
            ("data-paper@coco", "data", "paper"),
            ("detect@paper-secvit_large-mask_rcnn-1x", "detect", "paper"),
            ("pretrain@smoke-secvit_tiny", "pretrain", "smoke"),
            ("pretrain@smoke-sec_swin_tiny", "pretrain", "smoke"),
        ]
        for r in [cfg.for_stage(kind, profile, stage)]
    }
    assert settings == {
        "pretrain@paper-secvit_large": (2, 8, 12, 60),
        "evaluate@paper-secvit_large": (2, 8, 12, 60),
        "pretrain@paper-secvit_base": (1, 8, 12, 60),
        "data-paper@coco": (1, 0, 12, 60),
        "detect@paper-secvit_large-mask_rcnn-1x": (1, 8, 12, 60),
        "pretrain@smoke-secvit_tiny": (1, 4, 1, 7),
        "pretrain@smoke-sec_swin_tiny": (1, 4, 1, 60),
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
    assert "up to date" in run(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout  # DVC recorded the job's outputs


# ---- f) several tasks per job: one DDP run (gloo on CPU-only nodes), requeued and resumed


def test_two_task_job_trains_ddp_with_the_global_batch_and_resumes_after_requeue(scratch):
    if node_cpus() < 2:
        pytest.skip("the node has fewer than 2 CPUs for 2 tasks")
    params = {"smoke.pretrain.epochs": 1, "smoke.pretrain_speed.checkpoint_every_steps": 2, "slurm.stages": {"pretrain": {"tasks_per_node": 2}}}
    repo = scratch(params=params)
    make_imagenet(repo / "data/smoke/imagenet", num_classes=4, train_per_class=48, val_per_class=8, size=48, seed=0)  # 6 steps of 2 x 16
    job, _, fields = pretrain_requeued_mid_epoch(repo, checkpoint_s=240, finish_s=300)
    assert fields["NumTasks"] == "2", fields
    assert (repo / f"runs/slurm/smoke/{job}/{job}_1_log.out").is_file()  # task 1 ran too
    found = metrics(repo)
    assert found["world_size"] == 2 and found["accumulation"] == 1 and found["global_batch"] == 32
    assert found["epochs"] == 1 and 0 <= found["best_top1"] <= 100
