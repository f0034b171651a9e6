"""Which code a result came from: code snapshots for SLURM jobs, the code version in metrics, the orchestrator lock,
the dense stages' untracked speed options. Quick: no SLURM job, no training (tests/test_slurm.py runs the jobs)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from secvit.errors import SecvitError
from secvit.orchestrate.lock import OrchestratorLock, holder, is_held
from secvit.orchestrate.slurm import StageJob
from secvit.orchestrate.slurm_dag import elapsed_hours, needed_snapshots
from secvit.orchestrate.snapshot import KEEP_FRESH_S, changed_files, prune_snapshots, take_snapshot
from secvit.provenance import code_version, git_state


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_snapshots_are_the_installed_package_named_by_content(tmp_path: Path):
    repo = tmp_path / "repo"
    for rel in ("secvit/__init__.py", "secvit/models/seca.py", "cli/main.py", "pipelines/configs/mmdet/a.py", "orchestrate/slurm.py"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(f"# {rel}\n")
    (repo / "secvit/__pycache__").mkdir()
    (repo / "secvit/__pycache__/x.pyc").write_bytes(b"")
    (repo / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (repo / "dvc.lock").write_text("")
    (repo / "params.yaml").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    snap = take_snapshot(repo, tmp_path / "code")
    assert take_snapshot(repo, tmp_path / "code") == snap  # one snapshot per content
    os.utime(snap.path, (0, 0))
    assert take_snapshot(repo, tmp_path / "code") == snap and prune_snapshots(tmp_path / "code", set()) == []  # taken again: fresh
    made = sorted(p.relative_to(snap.path).as_posix() for p in snap.path.rglob("*") if p.is_file())
    assert made == ["files.json", "secvit/CODE_VERSION.json", "secvit/__init__.py", "secvit/cli/main.py", "secvit/models/seca.py",
                    "secvit/orchestrate/slurm.py", "secvit/pipelines/configs/mmdet/a.py"]  # laid out as installed, caches aside
    assert json.loads((snap.path / "secvit/CODE_VERSION.json").read_text()) == {**git_state(repo), "snapshot": snap.tree}
    assert git_state(repo)["git_dirty"] is False and len(git_state(repo)["git_commit"]) == 40
    (repo / "dvc.lock").write_text("schema: '2.0'\n")  # a stage committed by a repro, a parameter changed: not the code
    (repo / "params.yaml").write_text("smoke: {}\n")
    assert git_state(repo)["git_dirty"] is False

    (repo / "secvit/models/seca.py").write_text("# a docstring edit\n")
    (repo / "secvit/models/new.py").write_text("")
    assert changed_files(repo, snap.path, ["secvit/models", "cli"]) == ["secvit/models/new.py", "secvit/models/seca.py"]
    assert changed_files(repo, snap.path, ["cli", "secvit/__init__.py"]) == []
    assert git_state(repo)["git_dirty"] is True
    assert take_snapshot(repo, tmp_path / "code").tree != snap.tree
    assert git_state(tmp_path / "code") == {"git_commit": None, "git_dirty": None}


def test_snapshots_that_no_job_needs_are_removed(tmp_path: Path):
    """A snapshot stays while a recorded job of any profile that is not committed yet runs it (a requeue imports it
    again), or while it is fresh (another orchestrator may have just taken it); the others go, half-built ones too."""
    folder, store = tmp_path / "runs/slurm", tmp_path / "runs/slurm/code"
    for name in ("running", "committed", "fresh", "gone", ".half.1234abcd"):
        (store / name / "secvit").mkdir(parents=True)
    (folder / "paper").mkdir()
    (folder / "smoke").mkdir()
    (folder / "paper/jobs.json").write_text(json.dumps({"stages": {
        "pretrain@paper-secvit_tiny": {"job_id": "7", "code": str(store / "running"), "committed": False},
        "data-paper@imagenet": {"job_id": "6", "code": str(store / "committed"), "committed": True}}}))
    (folder / "smoke/jobs.json").write_text(json.dumps({"stages": {"data-smoke@coco": {"job_id": "3", "code": None, "committed": False}}}))
    for name in ("running", "committed", "gone", ".half.1234abcd"):
        os.utime(store / name, (time.time() - 2 * KEEP_FRESH_S,) * 2)
    assert needed_snapshots(folder) == {str(store / "running")}
    assert prune_snapshots(store, needed_snapshots(folder)) == [".half.1234abcd", "committed", "gone"]
    assert sorted(p.name for p in store.iterdir()) == ["fresh", "running"]


@pytest.mark.slow  # a Python that imports torch: seconds
def test_a_job_imports_its_snapshot_not_the_working_tree(tmp_path: Path):
    """The job's environment puts the snapshot before the editable install and the working directory: a stage
    (a console script, or ``python -m`` in the repository) imports the snapshot's code, on every requeue."""
    snap = take_snapshot(ROOT, tmp_path / "code")
    job = StageJob(code=str(snap.path))
    probe = "import secvit.provenance as p, secvit.models.seca as s; print(s.__file__); print(p.code_version())"
    out = subprocess.run([sys.executable, "-c", probe], env=job._environment(), cwd=ROOT, capture_output=True, text=True, check=True)
    where, version = out.stdout.splitlines()
    assert where == str(snap.path / "secvit/models/seca.py")
    assert eval(version) == {**git_state(ROOT), "snapshot": snap.tree}  # the version it was copied from
    assert StageJob(**{k: v for k, v in job.__getstate__().items()}).code == str(snap.path)  # a requeue runs the same


def test_code_version_outside_a_snapshot_is_the_checkouts():
    version = code_version()
    assert "snapshot" not in version and version == git_state(ROOT)


def test_one_orchestrator_per_profile(tmp_path: Path):
    folder = tmp_path / "runs/slurm/smoke"
    with OrchestratorLock(folder, "smoke") as lock:
        assert is_held(lock.path) and holder(lock.path)["pid"] == os.getpid()
        with pytest.raises(SecvitError, match=r"another `secvit repro` runs the smoke profile of this study on .* \(pid \d+, since .*\); .*"
                                              r"watch them with `secvit repro status --profile smoke` \(this one changed nothing\)"):
            OrchestratorLock(folder, "smoke").acquire()
        OrchestratorLock(tmp_path / "runs/slurm/paper", "paper").acquire()  # another profile: its own lock
    assert not is_held(lock.path)
    # a holder killed with -9 leaves its file but no lock: taken over
    holds = (f"import fcntl, json, os, time; f = open({str(folder / 'orchestrator.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
             "f.truncate(0); f.write(json.dumps({'host': 'h', 'pid': os.getpid(), 'started': 'now'})); f.flush(); time.sleep(60)")
    killed = subprocess.Popen([sys.executable, "-c", holds])
    try:
        for _ in range(300):
            if holder(folder / "orchestrator.lock").get("pid") == killed.pid:
                break
            subprocess.run(["sleep", "0.1"])
        assert is_held(folder / "orchestrator.lock")
    finally:
        killed.kill()
        killed.wait()
    assert holder(folder / "orchestrator.lock")["pid"] == killed.pid and not is_held(folder / "orchestrator.lock")
    with OrchestratorLock(folder, "smoke"):
        assert holder(folder / "orchestrator.lock")["pid"] == os.getpid()


def test_elapsed_hours():
    assert elapsed_hours("1:30") == pytest.approx(90 / 3600)
    assert elapsed_hours("2:00:00") == 2.0 and elapsed_hours("1-01:00:00") == 25.0 and elapsed_hours("") == 0.0


def test_dense_speed_options_live_apart_from_the_tracked_overrides():
    from secvit.downstream.config import SPEED_OVERRIDES, load_overrides

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for profile in ("smoke", "paper"):
        for task in ("detection", "segmentation"):
            assert not set(params[profile][task]["overrides"]) & set(SPEED_OVERRIDES)
            assert set(params[profile][f"{task}_speed"]) == set(SPEED_OVERRIDES)
            merged = load_overrides(params, profile, task)
            assert merged.workers == params[profile][f"{task}_speed"]["workers"]
            assert merged.length == params[profile][task]["overrides"]["length"]
    params["paper"]["detection"]["overrides"]["workers"] = 2
    with pytest.raises(SecvitError, match=r"setting 'paper\.detection\.overrides\.workers' belongs in paper\.detection_speed"):
        load_overrides(params, "paper", "detection")
    del params["paper"]["detection"]["overrides"]["workers"]
    params["paper"]["detection_speed"]["length"] = 2
    with pytest.raises(SecvitError, match=r"unknown setting 'paper\.detection_speed\.length'"):
        load_overrides(params, "paper", "detection")
