"""Every way SLURM stops a job saves the step in flight (real jobs on the local cluster, slurm/cluster.sh).

One job per stage kind (pretraining, detection, segmentation), the three at once (the cluster's partition
``preemptible`` lets them share CPUs), is stopped three times while it trains: a preemption by a job of the
higher-priority partition ``urgent`` (PreemptType=preempt/partition_prio, PreemptMode=REQUEUE, GraceTime 5 s) that
claims the memory of all three; its time limit, made to fall due while it trains (``scontrol update TimeLimit``:
SLURM sends the ``--signal`` warning before it); and ``scancel --signal=TERM``. Each time the stage finishes the
step in flight, saves, the job is requeued, and the next run resumes at the step after the one saved: no step is
trained twice. Each job ends with the weights of an uninterrupted run of the same stage (here, without SLURM, run
while the jobs run), tensor for tensor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import ROOT, invoke, scratch_repo, tool_env, trained_steps

from secvit.errors import SecvitError
from secvit.orchestrate.slurm_watch import ACTIVE, job_state, log_tail
from test_slurm import QUEUE_S, SMALL, _positions, job_fields, slurm_cluster, smoke_imagenet, wait_for  # noqa: F401  (slurm_cluster: the fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# the preemption first: it stops the three jobs at once, so it waits for the last of them to train; the other two
# stops follow each job at its own pace. The time limit's warning comes at slurmctld's next time-limit check (up to a
# minute later), so it stops the second run, which has the most steps left; scancel's TERM comes at once
STOPS = ("preemption", "time limit", "scancel --signal=TERM")
# the job's own settings: the preemptible partition, a share of the memory that a preemptor can claim
JOB = {"partition": "preemptible", "mem_gb": 2, "timeout_min": 15, "signal_delay_s": 90}

KINDS: dict[str, dict[str, Any]] = {
    "pretrain": {
        "argv": ["pretrain", "--profile", "smoke", "--model", "secvit_tiny"],
        # 2 epochs of 32 steps; no periodic mid-epoch checkpoint: the stops alone write those
        "params": {"smoke.data.generate.imagenet.train_per_class": 64, "smoke.pretrain_speed.checkpoint_every_steps": 0},
    },
    "detect": {
        "argv": ["detect", "--profile", "smoke", "--model", "secvit_tiny", "--detector", "retinanet", "--schedule", "1x"],
        # epoch-based: 8 epochs of 8 iterations; stops land mid-epoch. Each downstream run keeps a third of its
        # steps or more for the stops: the preemption waits for pretraining to train (by then the downstream jobs had
        # trained about 20 steps), and the time limit's warning comes up to a minute after it is set
        "params": {"smoke.detection.overrides.length": 8},
        "work": "runs/smoke/detection/secvit_tiny-retinanet-1x",
    },
    "segment": {
        "argv": ["segment", "--profile", "smoke", "--model", "secvit_tiny", "--head", "semantic_fpn"],
        "params": {"smoke.segmentation.overrides.length": 60, "smoke.segmentation_speed.checkpoint_every": 100},
        "work": "runs/smoke/segmentation/secvit_tiny-semantic_fpn",
    },
}


def _prepare(repo: Path, kind: str) -> subprocess.Popen | None:
    """The stage's inputs in a scratch project: generated data (and for downstream, 'pretrained' weights); the
    downstream data stage runs in the background (the process returned)."""
    if kind == "pretrain":
        smoke_imagenet(repo, train_per_class=64)
        return None
    from secvit.models import create

    torch.manual_seed(1)
    weights = repo / "runs/smoke/pretrain/secvit_tiny/best.pth"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": create("secvit_tiny", num_classes=4).state_dict(), "epoch": 2}, weights)
    dataset = "coco" if kind == "detect" else "ade20k"
    return subprocess.Popen(["secvit", "data", "--profile", "smoke", "--dataset", dataset], cwd=repo, env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _seconds(runtime: str) -> int:
    days, _, hms = runtime.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


@dataclasses.dataclass
class Case:
    """One kind's job (in ``repo``) and its uninterrupted run (in ``reference``)."""

    kind: str
    repo: Path
    reference: Path
    argv: list[str] = dataclasses.field(default_factory=list)
    settings: Any = None
    job: Any = None
    uninterrupted: subprocess.Popen | None = None
    stops: int = 0  # stops applied
    done: int = 0  # stops that saved and requeued the job

    def submit(self) -> None:
        from secvit.orchestrate.slurm import submit

        self.job = submit(self.argv, self.repo, self.settings, f"stops-{self.kind}", self.repo / "runs/slurm/smoke/%j")

    def log(self) -> str:
        if self.job is None:
            return ""
        err = Path(self.job.paths.stderr)
        return err.read_text() if err.exists() else ""

    def trained_runs(self) -> int:
        """How many runs (the first and the requeued ones) have started training."""
        if self.kind == "pretrain":
            return len(_positions(self.log(), "training secvit_tiny from"))
        return sum(1 for steps in trained_steps(self.repo / KINDS[self.kind]["work"]) if steps)

    def saved(self) -> int:
        return self.log().count("stopped on request")

    def restarts(self) -> int:
        return int(job_fields(self.job.job_id)["Restarts"])

    def final_weights(self, repo: Path) -> dict[str, torch.Tensor]:
        if self.kind == "pretrain":  # a finished run's last.pth keeps no weights: best.pth's, and the final metrics
            return torch.load(repo / "runs/smoke/pretrain/secvit_tiny/best.pth", map_location="cpu", weights_only=True)["model"]
        from secvit.downstream.hooks import load_own_checkpoint
        from secvit.downstream.runner import latest_checkpoint

        return load_own_checkpoint(latest_checkpoint(repo / KINDS[self.kind]["work"]))["state_dict"]


def _preempt(cases: list[Case]) -> None:
    """One job of the higher-priority partition that needs all our jobs' memory but 1 GB more than is free: only
    the preemptible jobs can make room (the debug partition's jobs are never preempted), all of ours."""
    node = dict(re.findall(r"(\w+)=(\S*)", invoke(ROOT, "scontrol", "show", "node", "-o").stdout))
    mem = int(node["RealMemory"]) - int(node["AllocMem"]) + (len(cases) - 1) * JOB["mem_gb"] * 1024 + 1024
    invoke(ROOT, "sbatch", "--parsable", "-p", "urgent", "-c", "1", f"--mem={mem}M", "-J", f"preemptor-{cases[0].job.job_id}",
           "-o", "/dev/null", "--wrap", "sleep 1")


def _stop(stop: str, case: Case) -> None:
    job = case.job.job_id
    if stop == "scancel --signal=TERM":
        invoke(ROOT, "scancel", "--signal=TERM", job)
    else:  # the time limit: its --signal warning (90 s before it) is due at once, the limit itself 40-100 s from now
        run_s = _seconds(job_fields(job)["RunTime"])
        invoke(ROOT, "scontrol", "update", f"JobId={job}", f"TimeLimit={math.ceil((run_s + 40) / 60)}")


def _start(kinds: list[str], tmp_path: Path, cases: list[Case]) -> None:
    """Per kind: two scratch projects with the stage's inputs; the uninterrupted run (one thread, as the job's one
    CPU) started in one, the job's settings resolved in the other (submitted later: :meth:`Case.submit`)."""
    from secvit.study import load_study

    data = []
    for kind in kinds:
        params = {**SMALL, **KINDS[kind]["params"]}
        case = Case(kind, scratch_repo(ROOT, tmp_path / kind / "stopped", untracked=True, params=params),
                    scratch_repo(ROOT, tmp_path / kind / "reference", untracked=True, params=params))
        cases.append(case)
        data.append(_prepare(case.repo, kind))
    env = {**tool_env(), "OMP_NUM_THREADS": "1"}
    for name in ("SLURM_JOB_ID", "WORLD_SIZE", "RANK"):
        env.pop(name, None)
    for case, making in zip(cases, data):
        if making is not None:
            _, err = making.communicate(timeout=300)
            assert making.returncode == 0, err[-2000:]
        for sub in ("data/smoke", "results/smoke/data", "runs/smoke/pretrain"):
            if (case.repo / sub).exists():
                shutil.copytree(case.repo / sub, case.reference / sub, dirs_exist_ok=True)
        argv = KINDS[case.kind]["argv"]
        options = {"profile": "smoke", **{a[2:].replace("-", "_"): b for a, b in zip(argv[1::2], argv[2::2])}}
        study = load_study(case.repo / "params.yaml")
        case.settings = dataclasses.replace(study.slurm.for_stage(study.find("smoke", argv[0], options)), **JOB)
        case.argv = ["secvit", *argv]
        case.uninterrupted = subprocess.Popen(["secvit", *argv], cwd=case.reference, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True)


# the stops' deadline catches a hang (a job that ends before its stops fails the test at once)
STOPS_S = 1200


def _stop_all(cases: list[Case], timeout: float = STOPS_S) -> None:
    """Apply STOPS to every job: each stop once the job's run it stops trains, the next once the job saved and was
    requeued; the preemption to all jobs at once."""
    deadline = time.monotonic() + timeout
    while any(c.done < len(STOPS) for c in cases):
        assert time.monotonic() < deadline, (f"stops applied/saved: {[(c.kind, c.stops, c.done) for c in cases]}; "
                                             + " | ".join(f"{c.kind}: {c.log()[-1500:]}" for c in cases if c.done < len(STOPS)))
        for case in cases:
            n = case.done + 1
            if case.done == len(STOPS):
                continue
            state = job_state_of(case)
            assert state in ACTIVE | {"UNKNOWN"}, (
                f"the {case.kind} job is {state} after {case.done} of its stops: {case.log()[-3000:]}")
            if case.stops < n:  # stop n is due once run n trains
                if STOPS[n - 1] == "preemption":
                    if all(c.stops == n - 1 and c.trained_runs() >= n for c in cases):
                        for c in cases:
                            assert job_state_of(c) == "RUNNING", c.log()[-3000:]
                        _preempt(cases)
                        for c in cases:
                            c.stops = n
                elif case.trained_runs() >= n:
                    assert job_state_of(case) == "RUNNING", case.log()[-3000:]
                    _stop(STOPS[n - 1], case)
                    case.stops = n
            elif case.saved() >= n and case.restarts() >= n:
                if STOPS[n - 1] == "time limit":
                    invoke(ROOT, "scontrol", "update", f"JobId={case.job.job_id}", f"TimeLimit={JOB['timeout_min']}")
                case.done = n
        time.sleep(0.5)


def job_state_of(case: Case) -> str:
    return job_state(case.job)  # a job SLURM forgot: from its result pickle


@pytest.mark.slow
def test_every_stop_signal_saves_the_step_in_flight_and_the_job_ends_with_uninterrupted_weights(tmp_path):
    cases: list[Case] = []
    try:
        _start(list(KINDS), tmp_path, cases)
        # the preemption stops the three jobs at once when all three train: pretraining, the quickest to start and to
        # train, is submitted once the downstream jobs train
        downstream = [c for c in cases if c.kind != "pretrain"]
        for case in downstream:
            case.submit()
        wait_for(lambda: all(c.trained_runs() >= 1 for c in downstream), QUEUE_S, "the downstream jobs to train", step=0.5)
        next(c for c in cases if c.kind == "pretrain").submit()
        _stop_all(cases)
        for case in cases:
            wait_for(lambda: job_state_of(case) == "COMPLETED", QUEUE_S, f"the {case.kind} job to complete", step=1)
        for case in cases:
            _, err = case.uninterrupted.communicate(timeout=600)
            assert case.uninterrupted.returncode == 0, err[-3000:]
    finally:
        for case in cases:
            if case.job is not None:
                subprocess.run(["scancel", case.job.job_id], capture_output=True)
            if case.uninterrupted is not None:
                case.uninterrupted.kill()
        if cases and cases[0].job is not None:
            subprocess.run(["scancel", "-n", f"preemptor-{cases[0].job.job_id}"], capture_output=True)

    for case in cases:
        kind, repo, log = case.kind, case.repo, case.log()
        assert int(job_fields(case.job.job_id)["Restarts"]) == 3, log_tail(case.job)
        assert log.count("stopped on request") == 3, log[-3000:]
        # the job's own process: TERM of scancel and of the preemption, then SLURM's warning before the time limit
        # (USR2, submitit's); it passes each on to the stage (which may get TERM itself too)
        out = Path(case.job.paths.stdout).read_text()
        assert out.count("[secvit] SIGTERM received") >= 2 and "Caught signal SIGUSR2" in out, out[-3000:]

        # each run resumed right after the step the previous one saved: nothing trained twice
        if kind == "pretrain":
            saved, resumed = _positions(log, "stopped on request"), _positions(log, "resuming secvit_tiny from")
            assert len(saved) == 3 and resumed == saved, (saved, resumed)
            trained = "2 epochs of"
        else:
            runs = trained_steps(repo / KINDS[kind]["work"])
            # "saved <work>/iter_N.pth at epoch E, iteration N; ..." (rich breaks the long path anywhere, not the words)
            saved = [int(n) for n in re.findall(r"stopped on request.*?, iteration (\d+);", " ".join(log.split()))]
            assert len(runs) == 4 and len(saved) == 3, (runs, saved)
            for i in range(3):
                assert runs[i][-1] == saved[i] and runs[i + 1][0] == saved[i] + 1, (runs, saved)
            trained = sum(len(r) for r in runs)
            assert trained == runs[-1][-1]  # every iteration trained once
        print(f"\n{kind}: stopped at {saved}, each resumed right after; {trained} steps trained, 0 redone")

        if kind == "pretrain":
            ours, theirs = (json.loads((r / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text()) for r in (repo, case.reference))
            for key in ("epochs", "best_top1", "best_epoch", "final_top1", "final_top1_ema", "train_loss"):
                assert ours[key] == theirs[key], (kind, key)
        a, b = case.final_weights(case.reference), case.final_weights(repo)
        assert a.keys() == b.keys()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{kind}: {len(differ)} of {len(a)} tensors differ from the uninterrupted run's, e.g. {differ[:3]}"


# ---- refused before anything is submitted


@pytest.mark.slow  # a `secvit repro` and a `secvit doctor` (30-140 s on the 2-core host)
def test_settings_that_cannot_work_are_refused_before_any_job_is_submitted(tmp_path):
    """`secvit repro --executor slurm` resolves every stage's settings first and refuses in one line that names the
    setting: a partition sinfo does not list; in the paper profile (GPUs), a GPU stage without GPUs, a stop warning
    shorter than a checkpoint's write, a time limit that cannot hold the warning and the write. `secvit plan` and
    `secvit doctor` show the same resolved settings per kind."""
    from secvit.cost.rates import load_throughput
    from secvit.orchestrate.slurm import refuse_unsubmittable
    from secvit.study import load_study
    from secvit.study.slurm import cluster_partitions, kind_settings

    repo = scratch_repo(ROOT, tmp_path / "repo", untracked=True, params={"slurm.stages": {"pretrain": {"partition": "nope"}}})
    result = invoke(repo, "secvit", "repro", "secvit_tiny", "--profile", "smoke", "--executor", "slurm", check=False, timeout=300)
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "partition 'nope' does not exist here" in error[0] and "slurm.stages.pretrain.partition" in error[0], error
    assert not list((repo / "runs/slurm/smoke").glob("[0-9]*")) and "preemptible" in error[0]  # no job; sinfo's partitions named

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = params["slurm"]["profiles"]["paper"]
    assert paper["gpus_per_node"] >= 1 and paper["partition"]  # the shipped paper block: jobs ask for GPUs
    partitions = cluster_partitions()
    assert partitions and {"debug", "preemptible", "urgent"} <= partitions
    cases = [
        ({"partition": "debug"}, None),
        ({"partition": "debug", "gpus_per_node": 0}, "would get no GPU: set slurm.profiles.paper.gpus_per_node"),
        ({"partition": "debug", "signal_delay_s": 1}, "raise slurm.profiles.paper.signal_delay_s"),
        ({"partition": "debug", "timeout_min": 5, "signal_delay_s": 300}, "raise slurm.profiles.paper.timeout_min"),
        ({}, "partition 'gpu' does not exist here"),
    ]
    rate = load_throughput("a100").checkpoint_gb_per_s
    for change, expected in cases:
        params["slurm"]["profiles"]["paper"] = {**paper, **change}
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        study = load_study(repo / "params.yaml")
        stages = [s for s in study.of("paper") if s.kind == "pretrain"]
        shown = {kind: problem for kind, _, problem in kind_settings(study, "paper", True, partitions, rate)}
        if expected is None:
            refuse_unsubmittable(study, stages, repo / "params.yaml")
            assert not any(shown.values()), shown
            continue
        with pytest.raises(SecvitError) as refused:
            refuse_unsubmittable(study, stages, repo / "params.yaml")
        assert expected in str(refused.value) and str(refused.value).startswith("nothing submitted: pretrain@paper-"), (change, refused.value)
        assert expected in (shown["pretrain"] or ""), shown  # what plan and doctor show for the kind
    doctor = subprocess.run(["secvit", "doctor", "--profile", "paper"], cwd=repo, env={**tool_env(), "COLUMNS": "400"},
                            capture_output=True, text=True, timeout=120)
    row = next((line for line in doctor.stdout.splitlines() if "SLURM pretrain jobs" in line), "")
    assert "refused: pretrain jobs: partition 'gpu' does not exist here" in row, doctor.stdout[-2000:]
