"""The local parallel runner of the DAG (`secvit repro all --jobs N`, orchestrate/dag.py) on failures.

Its success path runs in test_pipeline.py (the smoke DAG with two jobs); the SLURM executor shares
its stale-stage planning and commits (test_slurm.py).
"""

import pytest
import yaml
from conftest import invoke, scratch_repo

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
    assert "up to date" in invoke(repo, "dvc", "status", "data-smoke@coco", "data-smoke@imagenet").stdout  # committed
    assert "changed" in invoke(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout
    assert [p.name for p in stale_stages(repo, targets)] == ["pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"]


def test_jobs_must_be_positive(tmp_path, repo_root):
    from secvit.orchestrate.repro import repro_local

    repo = scratch_repo(repo_root, tmp_path / "repo")
    with pytest.raises(SecvitError, match="--jobs must be at least 1, got 0"):
        repro_local("smoke", repo, jobs=0)


def _chain(tmp_path):
    """A DVC project a -> b -> c; ``a`` is always_changed (it reads src.txt, like a data stage reads an external
    dataset); each stage appends its name to ran.log."""
    repo = tmp_path / "chain"
    repo.mkdir()
    (repo / "src.txt").write_text("one\n")
    stages = {
        "a": {"cmd": "cp src.txt a.txt && echo a >> ran.log", "always_changed": True, "outs": [{"a.txt": {"cache": False}}]},
        "b": {"cmd": "cp a.txt b.txt && echo b >> ran.log", "deps": ["a.txt"], "outs": [{"b.txt": {"cache": False}}]},
        "c": {"cmd": "cp b.txt c.txt && echo c >> ran.log", "deps": ["b.txt"], "outs": [{"c.txt": {"cache": False}}]},
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for args in (("git", "init", "-q"), ("dvc", "init", "-q"), ("git", "add", "-A"), ("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "chain")):
        invoke(repo, *args)
    return repo


def _ran(repo) -> list[str]:
    log = repo / "ran.log"
    ran = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return ran


def test_planning_matches_dvc_after_an_always_changed_stage(tmp_path):
    """As `dvc repro`: an always_changed stage runs every time; the stages below it run only if its run changed
    their dependencies (checked once it has run), not because it ran."""
    repo = _chain(tmp_path)
    plans = stale_stages(repo, ["c"])
    assert [(p.name, p.conditional) for p in plans] == [("a", False), ("b", False), ("c", False)]  # never ran
    run_parallel(repo, plans, 2, tmp_path / "logs")
    assert _ran(repo) == ["a", "b", "c"]

    plans = stale_stages(repo, ["c"])
    assert [(p.name, p.conditional) for p in plans] == [("a", False), ("b", True), ("c", True)]
    run_parallel(repo, plans, 2, tmp_path / "logs")
    assert _ran(repo) == ["a"]  # a's output came out the same: b and c are up to date
    assert "up to date" in invoke(repo, "dvc", "status", "b", "c").stdout

    (repo / "src.txt").write_text("two\n")  # the external data changed
    run_parallel(repo, stale_stages(repo, ["c"]), 2, tmp_path / "logs")
    assert _ran(repo) == ["a", "b", "c"] and (repo / "c.txt").read_text() == "two\n"
    invoke(repo, "dvc", "repro", "c")  # DVC's own run of the same plan agrees
    assert _ran(repo) == ["a"]


def test_repro_targets_name_tables_runs_and_stages(tmp_path, repo_root):
    from secvit.orchestrate.repro import resolve_targets
    from secvit.study import load_study

    repo = scratch_repo(repo_root, tmp_path / "repo")
    study = load_study(repo / "params.yaml")
    table4 = resolve_targets(study, "smoke", ["table4"], ["ours"])
    assert table4 == ["detect@smoke-secvit_tiny-mask_rcnn-1x", "detect@smoke-secvit_tiny-retinanet-1x"]  # the 1x schedule
    assert {p.name for p in stale_stages(repo, table4)} == {
        "data-smoke@imagenet", "data-smoke@coco", "pretrain@smoke-secvit_tiny", *table4
    }  # only what table 4 needs
    # the released lane's table 4: its dense run from the released checkpoint, which needs no pretraining
    released = resolve_targets(study, "smoke", ["table4"], ["released"])
    assert released == ["detect-released@smoke-secvit_tiny-mask_rcnn-1x"]
    assert resolve_targets(study, "smoke", ["table4"]) == table4 + released  # both lanes: params.yaml released.lanes
    assert {p.name for p in stale_stages(repo, released)} == {
        "data-smoke@imagenet", "data-smoke@coco", "released-smoke@secvit_tiny", "evaluate-released@smoke-secvit_tiny", *released}
    assert resolve_targets(study, "smoke", ["released:secvit_tiny"]) == ["evaluate-released@smoke-secvit_tiny"]
    lane_all = resolve_targets(study, "smoke", ["all"], ["released"])  # one lane: its stages (the tables wait for both)
    assert "figures@smoke" not in lane_all and "tables@smoke" not in lane_all and "pretrain@smoke-secvit_tiny" not in lane_all
    assert {"evaluate-released@smoke-secvit_tiny", "segment-released@smoke-secvit_tiny-semantic_fpn", "complexity@smoke"} <= set(lane_all)
    with pytest.raises(SecvitError, match="^secvit_tiny: nothing in the released lane of the smoke profile$"):
        resolve_targets(study, "smoke", ["secvit_tiny"], ["released"])
    assert resolve_targets(study, "smoke", ["secvit_tiny"]) == ["pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"]
    # table 7 in the smoke profile: complexity and the sweep's runs (the profile has no secvit_small run of its own)
    assert resolve_targets(study, "smoke", ["secvit_tiny-no_lce", "table7"]) == [
        "ablate@smoke-no_lce", "complexity@smoke", "sweep@smoke-64-16-4-1", "sweep@smoke-64-16-2-1", "sweep@smoke-64-8-2-1"]
    assert resolve_targets(study, "paper", ["secvit_large-upernet"]) == ["segment@paper-secvit_large-upernet"]
    assert resolve_targets(study, "smoke", None) == resolve_targets(study, "smoke", ["all"]) == ["tables@smoke", "figures@smoke"]
    assert resolve_targets(study, "smoke", ["data-smoke", "evaluate@smoke-secvit_tiny"]) == [
        "data-smoke@imagenet", "data-smoke@coco", "data-smoke@ade20k", "evaluate@smoke-secvit_tiny"]  # a group, a stage
    assert resolve_targets(study, "smoke", ["evaluate"])[:2] == ["evaluate@smoke-secvit_tiny", "evaluate@smoke-sec_swin_tiny"]
    with pytest.raises(SecvitError, match="unknown target 'secvit_tinny'"):
        resolve_targets(study, "smoke", ["secvit_tinny"])
    with pytest.raises(SecvitError, match="unknown table 'table9'"):
        resolve_targets(study, "smoke", ["table9"])


def test_repro_runs_only_what_a_target_needs(tmp_path, repo_root):
    from conftest import one_line_error, secvit, secvit_in_process

    repo = scratch_repo(repo_root, tmp_path / "repo")
    result = secvit(repo, "repro", "data-smoke@coco", "--jobs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    started = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("started ")]
    assert started == ["data-smoke@coco"] and "done: data-smoke@coco (smoke)" in " ".join(result.stderr.split())
    assert not (repo / "results/tables.md").exists()  # not the whole profile: no pointer to its tables
    message = one_line_error(secvit_in_process(repo, "repro", "tabel4"))
    assert "unknown target 'tabel4'" in message
