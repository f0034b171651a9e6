"""`secvit plan`: the study's device-hours before it runs (orchestrate/plan.py), checked against its own
rules (FLOPs x images / rate, devices from the SLURM settings, the peers switch). The check against a real
smoke run's stage times is in test_pipeline.py, beside the smoke run it times."""

import pytest
import yaml
from conftest import make_project, one_line_error, secvit_in_process

from secvit.errors import SecvitError
from secvit.orchestrate.plan import H100_OVER_A100, Flops, gpu_default, load_throughput, plan, render, table2_inference_rate

TINY = ["pretrain@paper-secvit_tiny", "evaluate@paper-secvit_tiny", "pretrain@paper-pacavit_tiny", "detect@paper-secvit_tiny-*",
        "segment@paper-secvit_tiny-*"]


def _edit(project, **changes):
    """Set dotted keys of the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def flops(tmp_path_factory):
    return Flops(tmp_path_factory.mktemp("flops") / "flops.json")  # one fvcore count per model and size in this module


def test_gpu_defaults_come_from_table_2():
    infer, rows = table2_inference_rate()
    # SEC-Swin-T/S and SEC-FasterViT-0/1: throughput x GFLOPs as printed (A100, batch 64)
    assert len(rows) == 4 and infer == pytest.approx((1482 * 4.9 + 804 * 9.3 + 3218 * 3.6 + 2486 * 5.6) / 4)
    a100, h100 = gpu_default("a100"), gpu_default("h100")
    assert a100.eval_gflops_per_s == pytest.approx(infer) and a100.train_gflops_per_s == pytest.approx(infer / 3)
    assert h100.train_gflops_per_s == pytest.approx(H100_OVER_A100 * a100.train_gflops_per_s)
    assert "table 2" in a100.source and "assumed" in h100.source
    with pytest.raises(SecvitError, match="^unknown device 'v100'; choose a100, h100"):
        gpu_default("v100")
    with pytest.raises(SecvitError, match="^no throughput file v100; give a100, h100, or run `secvit bench train` first$"):
        load_throughput("v100")


def test_paper_stages_under_slurm_settings(tmp_path, repo_root, flops):
    """Device-hours follow FLOPs x images x epochs / rate; wall time follows the stage kind's SLURM devices."""
    project = make_project(tmp_path, repo_root)
    _edit(project, **{"slurm.stages": {"pretrain": {"nodes": 2, "gpus_per_node": 8, "timeout_min": 1440},
                                        "detect": {"gpus_per_node": 8}, "segment": {"gpus_per_node": 8}, "evaluate": {"gpus_per_node": 1}}})
    a100 = gpu_default("a100")
    p = plan("paper", project / "params.yaml", a100, "slurm", flops, only=TINY)
    by = {s.stage: s for s in p.stages}
    pre = by["pretrain@paper-secvit_tiny"]
    gflops = flops("secvit_tiny", 224)[0]
    assert pre.gflops_per_image == gflops and 2.6 < gflops < 2.8  # all ops at 224 (README: 2.72)
    assert pre.train_images == 300 * (1281167 // 2048) * 2048
    assert pre.devices == 16 and pre.device_kind == "GPU" and pre.timeout_min == 1440
    train_h = pre.train_images * gflops / a100.train_gflops_per_s / 3600
    assert train_h < pre.device_hours < 1.1 * train_h  # evaluation, start-up and checkpoints are a few percent
    assert pre.wall_s == pytest.approx(pre.device_hours * 3600 / 16)
    assert pre.jobs == -(-pre.wall_s // (1440 * 60))  # one job per time limit, each resuming the last
    assert by["evaluate@paper-secvit_tiny"].devices == 1
    # the paper's own printed detector and segmentor FLOPs for SecViT-T (tables 4, 5: 1280x800, 512x512), per
    # pixel, on a 4:3 image resized into 1333x800 (1067x800), and on ADE20K's 512x512 training crops. Mask R-CNN's
    # RoI heads work per RoI (2fc box head 14.3 MFLOPs, FCN mask head 530 MFLOPs): out of the printed figure go
    # 1000 boxed and 100 masked proposals, and a training image adds 512 sampled RoIs, 5 x 7.27 of them masked
    box, mask = (256 * 49 * 1024 + 1024 * 1024 + 1024 * (81 + 320)) / 1e9, (4 * 9 * 256**2 * 196 + 256**2 * 4 * 196 + 256 * 80 * 784) / 1e9
    mask_rcnn = by["detect@paper-secvit_tiny-mask_rcnn-1x"]
    roi_train = 512 * box + 5 * 7.27 * mask
    assert mask_rcnn.gflops_per_image == pytest.approx((221 - 1000 * box - 100 * mask) * 1067 / 1280 + roi_train, rel=1e-3)
    assert by["detect@paper-secvit_tiny-retinanet-1x"].gflops_per_image == pytest.approx(202 * 1067 / 1280, rel=1e-3)
    fpn = by["segment@paper-secvit_tiny-semantic_fpn"]
    assert fpn.gflops_per_image == 34 and fpn.train_images == 80000 * 16  # 80k iterations x 8 GPUs x 2 images
    _edit(project, **{"slurm.stages.segment": {"gpus_per_node": 2}})  # the global batch is kept on 2 GPUs (accumulation)
    two = plan("paper", project / "params.yaml", a100, "slurm", flops, only=["segment@paper-secvit_tiny-semantic_fpn"])
    assert two.stages[0].train_images == fpn.train_images and two.stages[0].wall_s > 3.5 * fpn.wall_s
    assert by["detect@paper-secvit_tiny-mask_rcnn-1x"].train_images == 12 * 118287
    assert fpn.upstream == ["data-paper@ade20k", "pretrain@paper-secvit_tiny"]
    # per table: table 4 alone, and with the pretraining it needs
    own, upstream = p.per_table()["table4"]
    assert own == pytest.approx(sum(by[s].device_hours for s in by if s.startswith("detect@")))
    assert upstream == pytest.approx(own + pre.device_hours)
    # the peers apart; H100 halves the compute
    peer = by["pretrain@paper-pacavit_tiny"]
    assert peer.peer and peer.tables == ["peers"] and not pre.peer
    h100 = plan("paper", project / "params.yaml", gpu_default("h100"), "slurm", flops, only=TINY[:1])
    assert h100.stages[0].device_hours == pytest.approx(pre.device_hours / 2, rel=0.05)
    text = render(p)
    for line in ("pretrain@paper-secvit_tiny", "pretrain@paper-pacavit_tiny (peer)", "total:", "of which the peers", "table4", "assumptions:"):
        assert line in text, line


def test_peers_switch_leaves_the_peers_out(tmp_path, repo_root, flops):
    project = make_project(tmp_path, repo_root)
    a100, only = gpu_default("a100"), ["pretrain@smoke-secvit_tiny", "pretrain@smoke-stvit_small"]
    with_peers = plan("smoke", project / "params.yaml", a100, "local", flops, only=only)
    _edit(project, **{"peers.smoke": False})
    without = plan("smoke", project / "params.yaml", a100, "local", flops, only=only)
    assert [s.stage for s in without.skipped_peers] == ["pretrain@smoke-stvit_small"]
    assert [s.stage for s in without.stages] == ["pretrain@smoke-secvit_tiny"]
    assert without.total()[0] == pytest.approx(with_peers.total()[0] - without.skipped_peers[0].device_hours)
    assert "left out (peers.smoke: false)" in render(without)
    _edit(project, **{"peers.smoke": "no"})
    with pytest.raises(SecvitError, match=r"^setting 'peers\.smoke' must be true or false, got 'no'$"):
        plan("smoke", project / "params.yaml", a100, "local", flops, only=only[:1])


def test_plan_errors_are_one_line(tmp_path, repo_root):
    project = make_project(tmp_path, repo_root)
    assert "error: unknown profile 'huge'" in one_line_error(secvit_in_process(project, "plan", "--profile", "huge"))
    message = one_line_error(secvit_in_process(project, "plan", "--profile", "smoke", "--throughput", "nothere.json"))
    assert "no throughput file nothere.json" in message
    message = one_line_error(secvit_in_process(project, "plan", "--profile", "smoke", "--executor", "cloud"))
    assert message == "error: unknown executor 'cloud'; choose local or slurm"


def test_peers_switch_names_real_stages(tmp_path, repo_root):
    """`peers.<profile>: false` leaves out exactly the peers' DVC stages (secvit repro all skips them)."""
    import subprocess
    import sys
    from pathlib import Path

    from secvit.orchestrate.plan import left_out_peers

    project = make_project(tmp_path, repo_root)
    assert left_out_peers(project / "params.yaml", "smoke") == set()
    _edit(project, **{"peers.smoke": False, "peers.paper": False})
    smoke = left_out_peers(project / "params.yaml", "smoke")
    assert smoke == {"pretrain@smoke-stvit_small", "evaluate@smoke-stvit_small", "pretrain@smoke-pacavit_tiny", "evaluate@smoke-pacavit_tiny",
                     "segment@smoke-stvit_small-semantic_fpn", "segment@smoke-pacavit_tiny-semantic_fpn"}
    paper = left_out_peers(project / "params.yaml", "paper")
    assert len(paper) == 12 and all(name.split("@")[1].split("-")[1].startswith(("stvit_", "pacavit_")) for name in paper)
    dvc = str(Path(sys.executable).with_name("dvc"))
    listed = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=repo_root, capture_output=True, text=True, check=True).stdout.split()
    assert smoke | paper <= set(listed)


class _Submitted(Exception):
    """Raised by the stand-in SLURM scheduler with the stages it was handed."""


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_repro_all_leaves_the_peers_stages_out(tmp_path, repo_root, monkeypatch, executor):
    """With `peers.smoke: false`, `secvit repro all` hands the DAG runner, or the SLURM scheduler, the stale
    stages without the peers' (DVC's stale-stage list, the runner and the scheduler are replaced here;
    tests/test_pipeline.py and tests/test_slurm.py run them for real)."""
    import shutil

    from secvit.orchestrate import dag, repro, slurm_dag
    from secvit.orchestrate.dag import StalePlan

    project = make_project(tmp_path, repo_root)
    shutil.copy(repo_root / "dvc.yaml", project / "dvc.yaml")
    (project / ".dvc").mkdir()
    _edit(project, **{"peers.smoke": False})
    stale = [StalePlan("pretrain@smoke-secvit_tiny", "secvit pretrain", project, ()),
             StalePlan("pretrain@smoke-stvit_small", "secvit pretrain", project, ()),
             StalePlan("segment@smoke-stvit_small-semantic_fpn", "secvit segment", project, ("pretrain@smoke-stvit_small",)),
             StalePlan("tables@smoke", "secvit tables", project, ("pretrain@smoke-secvit_tiny", "pretrain@smoke-stvit_small"))]
    monkeypatch.setattr(dag, "stale_stages", lambda root, targets: stale)
    if executor == "local":
        ran = []
        monkeypatch.setattr(dag, "run_parallel", lambda root, plans, jobs, logs: ran.append((plans, jobs)))
        repro.repro_local("smoke", project, jobs=1)
        (plans, jobs), = ran
        assert jobs == 1
    else:
        def scheduler(root, profile, plans, *rest):
            raise _Submitted(plans)

        monkeypatch.setattr(slurm_dag, "require_slurm", lambda: None)
        monkeypatch.setattr(slurm_dag, "Scheduler", scheduler)
        with pytest.raises(_Submitted) as submitted:
            slurm_dag.repro_slurm("smoke", project)
        plans, = submitted.value.args
    assert [p.name for p in plans] == ["pretrain@smoke-secvit_tiny", "tables@smoke"]
    assert plans[1].upstream == ("pretrain@smoke-secvit_tiny",)  # the tables wait for the stages that run
