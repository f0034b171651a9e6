"""The study model (secvit/study/) is the one stage graph: dvc.yaml is held to it stage for stage, command for
command and dependency for dependency, and target resolution, the peers switch, the SLURM settings and the
cost plan all read it."""

import contextlib
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import make_project, invoke

from secvit.errors import SecvitError
from secvit.study import load_study


def _dvc_graph(root: Path) -> dict[str, tuple[str, set[str]]]:
    """DVC's own stages of the project at ``root``: name -> (command, names of the stages it depends on)."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # stage names as the command line gives them
        graph = repo.index.graph
        return {s.addressing: (str(s.cmd), {u.addressing for u in graph.successors(s)}) for s in graph.nodes if s.cmd}


def _hold_dvc_to_the_study(root: Path) -> None:
    study = load_study(root / "params.yaml")
    dvc = _dvc_graph(root)
    assert set(dvc) == {s.name for s in study.stages}, set(dvc) ^ {s.name for s in study.stages}
    for stage in study.stages:
        cmd, upstream = dvc[stage.name]
        assert cmd == stage.cmd, stage.name
        assert upstream == set(stage.upstream), (stage.name, upstream ^ set(stage.upstream))


def test_dvc_yaml_is_the_study(repo_root):
    _hold_dvc_to_the_study(repo_root)


def test_dvc_yaml_follows_edited_params(tmp_path, repo_root):
    """Edited runs (a dense run from a released file, which no stage makes; a smaller sweep; a peer's detection)
    change dvc.yaml's stages and the study's alike."""
    project = make_project(tmp_path / "p", repo_root)
    shutil.copy(repo_root / "dvc.yaml", project / "dvc.yaml")
    invoke(project, "git", "init", "-q")
    invoke(project, "dvc", "init", "-q")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sweep"]["clusters"] = params["sweep"]["clusters"][:1]
    params["detection_runs"]["smoke-secvit_tiny-retinanet-1x"]["weights"] = "released/SecViT-T.pth"
    params["detection_runs"]["smoke-stvit_small-retinanet-1x"] = {
        "profile": "smoke", "model": "stvit_small", "detector": "retinanet", "schedule": "1x", "weights": "runs/smoke/pretrain/stvit_small/best.pth"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _hold_dvc_to_the_study(project)
    study = load_study(project / "params.yaml")
    assert study["detect@smoke-secvit_tiny-retinanet-1x"].upstream == ("data-smoke@coco",)  # a file no stage writes
    peer = study["detect@smoke-stvit_small-retinanet-1x"]
    assert peer.peer and peer.upstream == ("data-smoke@coco", "pretrain@smoke-stvit_small") and peer.tables == ("table4",)


def test_stages_name_their_kind_run_tables_and_peers(repo_root):
    study = load_study(repo_root / "params.yaml")
    tiny = study["pretrain@paper-secvit_tiny"]
    assert (tiny.kind, tiny.profile, tiny.model, tiny.run, tiny.tables, tiny.peer) == ("pretrain", "paper", "secvit_tiny", "secvit_tiny",
                                                                                        ("table1", "table6"), False)
    assert study["pretrain@paper-secvit_small"].tables == ("table1", "table7")  # the released clusters: table 7's last row
    assert study["evaluate@paper-sec_swin_tiny"].tables == ("table2", "table6")
    sweep = study["sweep@paper-64-16-4-1"]
    assert (sweep.kind, sweep.model, sweep.run, sweep.tables, sweep.cmd) == (
        "pretrain", "secvit_small", "secvit_small-c64-16-4-1", ("table7",), "secvit pretrain --profile paper --clusters 64-16-4-1")
    assert study["ablate@smoke-no_lce"].run == "secvit_tiny-no_lce" and study["ablate@smoke-no_lce"].tables == ("table6",)
    peer = study["pretrain@paper-stvit_small"]
    assert peer.peer and peer.tables == ()  # beside table 1: no paper table prints it
    cascade = study["detect@paper-secvit_base-cascade_mask_rcnn-3x_ms"]
    assert (cascade.kind, cascade.run, cascade.tables, cascade.upstream) == (
        "detect", "secvit_base-cascade_mask_rcnn-3x_ms", ("table3",), ("data-paper@coco", "pretrain@paper-secvit_base"))
    assert study["segment@smoke-stvit_small-semantic_fpn"].tables == ("table5",) and study["segment@smoke-stvit_small-semantic_fpn"].peer
    assert set(study["complexity@smoke"].tables) == {"table1", "table2", "table6", "table7", "table8"}
    assert [s.kind for s in study.of("smoke")][:4] == ["data", "data", "data", "complexity"]
    assert study.final("smoke") == ["tables@smoke", "figures@smoke"]
    assert study.runs("smoke")["secvit_tiny"] == ["pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"]
    assert study.showing("smoke", "table4") == ["detect@smoke-secvit_tiny-mask_rcnn-1x", "detect@smoke-secvit_tiny-retinanet-1x",
                                                "detect-released@smoke-secvit_tiny-mask_rcnn-1x"]
    # the SLURM keys of a stage's run, least specific first
    assert tiny.slurm_keys == ("secvit_tiny", "paper-secvit_tiny", "pretrain@paper-secvit_tiny")
    assert sweep.slurm_keys == ("secvit_small-c64-16-4-1", "paper-64-16-4-1", "sweep@paper-64-16-4-1")
    assert study["data-smoke@coco"].slurm_keys == ("coco", "data-smoke@coco")
    with pytest.raises(SecvitError, match="^no stage 'pretrain@paper-secvit_huge' in the study"):
        study["pretrain@paper-secvit_huge"]


def test_the_released_lane_is_its_own_stages(repo_root):
    """The released checkpoints' evaluations and the dense runs from them: their own stages, run keys and folders,
    upstream only of the file (the smoke profile's stand-in) and the data; the lanes switch like the peers."""
    study = load_study(repo_root / "params.yaml")
    stand_in = study["released-smoke@secvit_tiny"]
    assert (stand_in.kind, stand_in.lane, stand_in.cmd) == ("data", "released", "secvit data --profile smoke --released secvit_tiny")
    check = study["evaluate-released@smoke-secvit_tiny"]
    assert (check.kind, check.lane, check.upstream, check.tables, check.target) == (
        "evaluate", "released", ("released-smoke@secvit_tiny", "data-smoke@imagenet"), ("table1",), "released:secvit_tiny")
    assert check.cmd == "secvit evaluate --profile smoke --model secvit_tiny --checkpoint released:secvit_tiny"
    assert study["evaluate-released@paper-secvit_large"].upstream == ("data-paper@imagenet",)  # a downloaded file
    ours, theirs = study["detect@paper-secvit_small-mask_rcnn-3x_ms"], study["detect-released@paper-secvit_small-mask_rcnn-3x_ms"]
    assert (ours.lane, str(ours.outputs), ours.target) == ("ours", "runs/paper/detection/secvit_small-mask_rcnn-3x_ms", "secvit_small-mask_rcnn-3x_ms")
    assert (theirs.lane, str(theirs.outputs), theirs.target, theirs.tables) == (
        "released", "runs/paper/released/detection/secvit_small-mask_rcnn-3x_ms", "released:secvit_small-mask_rcnn-3x_ms", ("table3",))
    assert theirs.upstream == ("data-paper@coco", "evaluate-released@paper-secvit_small")
    assert study.runs("paper")["released:secvit_small-mask_rcnn-3x_ms"] == [theirs.name]
    assert study.find("paper", "detect", {"model": "secvit_small", "detector": "mask_rcnn", "schedule": "3x_ms",
                                          "weights": "released:secvit_small"}) is theirs
    assert study.find("paper", "evaluate", {"model": "secvit_tiny", "checkpoint": "released:secvit_tiny"}).name == "evaluate-released@paper-secvit_tiny"
    assert study.find("smoke", "data", {"released": "secvit_tiny", "dataset": None}) is stand_in
    # lanes: like the peers switch, `--lane released` leaves our lane out, figure 4 included; shared stages stay
    ours_out = study.left_out("smoke", ["released"])
    assert {"pretrain@smoke-secvit_tiny", "detect@smoke-secvit_tiny-mask_rcnn-1x", "figures@smoke"} <= ours_out
    assert not any(study[n].lane == "released" or study[n].lane is None for n in ours_out)
    assert {s.name for s in study.of("smoke") if s.lane == "released"} == study.left_out("smoke", ["ours"])
    assert study.left_out("smoke", ["both"]) == study.left_out("smoke") == set()
    with pytest.raises(SecvitError, match="^unknown lane 'theirs'; choose released, ours or both$"):
        study.left_out("smoke", ["theirs"])


def test_released_params_errors_are_one_line(tmp_path, repo_root):
    project = make_project(tmp_path, repo_root)
    original = yaml.safe_load((project / "params.yaml").read_text())
    for edit, message in (
        (lambda p: p["detection_runs"]["smoke-secvit_tiny-retinanet-1x"].update(weights="released:secvit_tiny"),
         r"^'detection_runs\.smoke-secvit_tiny-retinanet-1x' runs from a released checkpoint \(released:secvit_tiny\): list it under "
         r"released\.detection_runs \(the released lane\)$"),
        (lambda p: p["released"]["segmentation_runs"]["smoke-secvit_tiny-semantic_fpn"].update(weights="released:secvit_small"),
         r"^'released\.segmentation_runs\.smoke-secvit_tiny-semantic_fpn\.weights' must be released:secvit_tiny"),
        (lambda p: p["released"]["checkpoints"]["paper-secvit_base"].update(sha256="abc"), r"^'released\.checkpoints\.paper-secvit_base\.sha256' must be 64 hex"),
        (lambda p: p["released"]["checkpoints"].pop("smoke-secvit_tiny"),
         r"^'released\.detection_runs\.smoke-secvit_tiny-mask_rcnn-1x' runs from released:secvit_tiny, but released\.checkpoints has no smoke-secvit_tiny"),
        (lambda p: p["released"].update(lanes={"smoke": ["theirs"]}), r"^setting 'released\.lanes\.smoke' must be a list of ours and/or released"),
    ):
        params = yaml.safe_load(yaml.safe_dump(original))
        edit(params)
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        with pytest.raises(SecvitError, match=message):
            load_study(project / "params.yaml")


def test_a_stage_command_finds_its_stage(repo_root):
    """A stage command run by hand (`--executor slurm`) gets the settings of the study's stage it runs."""
    study = load_study(repo_root / "params.yaml")
    find = study.find
    assert find("smoke", "pretrain", {"model": "secvit_tiny", "clusters": None, "params": "p"}).name == "pretrain@smoke-secvit_tiny"
    assert find("paper", "pretrain", {"model": None, "clusters": "64-8-2-1"}).name == "sweep@paper-64-8-2-1"
    assert find("paper", "pretrain", {"model": "secvit_small", "clusters": "64-8-2-1"}).name == "sweep@paper-64-8-2-1"
    assert find("smoke", "pretrain", {"ablation": "no_cpe"}).name == "ablate@smoke-no_cpe"
    assert find("paper", "evaluate", {"model": "secvit_large", "checkpoint": "x.pth"}).name == "evaluate@paper-secvit_large"
    assert find("paper", "detect", {"model": "secvit_tiny", "detector": "retinanet", "schedule": "1x", "weights": "w"}).name == (
        "detect@paper-secvit_tiny-retinanet-1x")
    assert find("smoke", "complexity", {"device": None}).name == "complexity@smoke"
    assert find("smoke", "pretrain", {"model": "secvit_large"}) is None  # no such run in the smoke profile


def test_peers_switch_leaves_out_the_peers_stages(tmp_path, repo_root):
    project = make_project(tmp_path, repo_root)
    assert load_study(project / "params.yaml").left_out("smoke") == set()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["peers"].update(smoke=False, paper=False)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    study = load_study(project / "params.yaml")
    assert study.left_out("smoke") == {
        "pretrain@smoke-stvit_small", "evaluate@smoke-stvit_small", "pretrain@smoke-pacavit_tiny", "evaluate@smoke-pacavit_tiny",
        "segment@smoke-stvit_small-semantic_fpn", "segment@smoke-pacavit_tiny-semantic_fpn"}
    paper = study.left_out("paper")
    assert len(paper) == 12 and all(study[name].model.startswith(("stvit_", "pacavit_")) for name in paper)
    params["peers"]["smoke"] = "no"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SecvitError, match=r"^setting 'peers\.smoke' must be true or false, got 'no'$"):
        load_study(project / "params.yaml")
    params["peers"]["smoke"] = True
    del params["detection_runs"]["smoke-secvit_tiny-retinanet-1x"]["weights"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SecvitError, match=r"^'detection_runs\.smoke-secvit_tiny-retinanet-1x' in params.yaml needs weights \(each entry"):
        load_study(project / "params.yaml")


def test_the_readme_draws_dvcs_dag(repo_root):
    """The README's DAG is `dvc dag`'s own, per stage group (regenerate the block with the command it names)."""
    dag = invoke(repo_root, "dvc", "dag", "--md", "--collapse-foreach-matrix").stdout.strip()
    readme = (repo_root / "README.md").read_text()
    block = readme.split("<!-- dvc dag --md --collapse-foreach-matrix -->\n", 1)[1].split("\n<!-- end of dvc dag -->", 1)[0]
    assert block.strip() == dag, "the README's DAG is out of date: paste `dvc dag --md --collapse-foreach-matrix` into it"
