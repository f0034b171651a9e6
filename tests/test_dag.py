"""The local parallel runner of the DAG (`secvit repro all --jobs N`, orchestrate/dag.py) on failures.

Its success path runs in test_pipeline.py (the smoke DAG with two jobs); the SLURM executor shares
its stale-stage planning and commits (test_slurm.py).
"""

import pytest
from conftest import run, scratch_repo

from secvit.errors import SecvitError
from secvit.orchestrate.dag import downstream_of, run_parallel, stale_stages


@pytest.mark.slow
def test_a_failed_stage_skips_its_dependents_and_the_rest_is_committed(tmp_path, repo_root):
    repo = scratch_repo(repo_root, tmp_path / "repo", params={"smoke.pretrain.epochs": "two"})  # pretrain rejects it
    targets = ["data-smoke@coco", "evaluate@smoke-secvit_tiny"]
    plans = stale_stages(repo, targets)
    order = [p.name for p in plans]
    assert set(order) == {"data-smoke@coco", "data-smoke@imagenet", "pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"}
    assert order.index("data-smoke@imagenet") < order.index("pretrain@smoke-secvit_tiny") < order.index("evaluate@smoke-secvit_tiny")
    assert downstream_of(plans, "data-smoke@imagenet") == ["pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"]
    logs = repo / "runs/smoke/logs"

    with pytest.raises(SecvitError) as failure:
        run_parallel(repo, plans, 2, logs)

    message = str(failure.value)
    assert message.startswith("stage pretrain@smoke-secvit_tiny failed") and "1 stage(s) downstream skipped" in message, message
    assert "\n" not in message
    assert "epochs" in (logs / "pretrain@smoke-secvit_tiny.log").read_text()  # the stage's own error
    assert not (logs / "evaluate@smoke-secvit_tiny.log").exists()  # never started
    assert "up to date" in run(repo, "dvc", "status", "data-smoke@coco", "data-smoke@imagenet").stdout  # committed
    assert "changed" in run(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout
    assert [p.name for p in stale_stages(repo, targets)] == ["pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"]


def test_jobs_must_be_positive(tmp_path, repo_root):
    from secvit.orchestrate.repro import repro_local

    repo = scratch_repo(repo_root, tmp_path / "repo")
    with pytest.raises(SecvitError, match="--jobs must be at least 1, got 0"):
        repro_local("smoke", repo, jobs=0)
