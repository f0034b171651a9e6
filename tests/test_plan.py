"""`secvit plan`: the study's device-hours before it runs (secvit/cost/), checked against its own rules on fixed
inputs (FLOPs x images / rate, devices from the SLURM settings, the peers switch). How close it comes to a real
smoke run's stage times is a benchmark, not a test: benchmarks/plan_vs_run.py prints the ratios."""

import pytest
from conftest import edit_params, make_project, one_line_error, secvit_in_process

from secvit.errors import SecvitError
from secvit.cost.flops import Flops
from secvit.cost.plan import plan, render
from secvit.cost.rates import H100_OVER_A100, gpu_default, load_throughput, table2_inference_rate

TINY = ["pretrain@paper-secvit_tiny", "evaluate@paper-secvit_tiny", "pretrain@paper-pacavit_tiny", "detect@paper-secvit_tiny-*",
        "segment@paper-secvit_tiny-*"]


def _edit(project, **changes):
    """Set dotted keys of the project's params.yaml."""
    edit_params(project / "params.yaml", changes)


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


def test_stage_seconds_follow_the_rates_on_fixed_inputs():
    """The planner's arithmetic on fixed inputs: images x GFLOPs / rate at the image's GFLOPs (interpolated log-log
    along the measured curve, held beyond it; training scaled as evaluation), RoI heads at their own rates,
    checkpoints at the write rate, start-up added, device-seconds over the devices."""
    from secvit.cost.plan import Devices, stage_cost
    from secvit.cost.rates import Throughput
    from secvit.cost.work import RoIWork, Work
    from secvit.study import Stage

    rate = Throughput("cpu", "fixed", train_gflops_per_s=10.0, eval_gflops_per_s=20.0, startup_s=3.0, checkpoint_gb_per_s=2.0,
                      measured={"gflops_per_image": 1.0}, eval_curve=[[1.0, 20.0], [4.0, 80.0]], dense_startup_s=0.0,
                      roi_train_gflops_per_s=5.0, roi_eval_gflops_per_s=15.0)
    assert rate.eval_rate(2.0) == pytest.approx(40.0)  # log-log: rates x2 for GFLOPs x2 on this curve
    assert rate.eval_rate(0.5) == 20.0 and rate.eval_rate(8.0) == 80.0  # held beyond the curve
    assert rate.train_rate(2.0) == pytest.approx(20.0)  # the training rate (10 at 1 GFLOP) scaled as evaluation
    work = Work(gflops=2.0, trained=100, evaluated=50, eval_gflops=4.0, roi=RoIWork(train=1.0, test=3.0), extra_s=5.0,
                checkpoint_bytes=4e9, startup_s=1.0)
    cost = stage_cost(Stage("x@smoke", "pretrain", "smoke"), work, rate, Devices(4, "CPU", None))
    compute = 5.0 + 100 * 2.0 / 20.0 + 100 * 1.0 / 5.0 + 50 * 4.0 / 80.0 + 50 * 3.0 / 15.0
    assert cost.compute_s == pytest.approx(compute) and cost.checkpoint_s == pytest.approx(2.0) and cost.startup_s == 4.0
    assert cost.wall_s == pytest.approx(4.0 + compute / 4 + 2.0) and cost.device_hours == pytest.approx(4 * cost.wall_s / 3600)
    assert cost.gflops_per_image == 3.0 and (cost.devices, cost.device_kind) == (4, "CPU")
    idle = stage_cost(Stage("tables@smoke", "tables", "smoke"), Work(), rate, Devices(4, "GPU", 60))
    assert (idle.devices, idle.device_kind, idle.device_hours, idle.wall_s) == (1, "CPU", 0.0, 3.0)  # no device work: one CPU


def test_paper_stages_under_slurm_settings(tmp_path, repo_root, flops):
    """Device-hours follow FLOPs x images x epochs / rate; wall time follows the stage kind's SLURM devices."""
    project = make_project(tmp_path, repo_root)
    _edit(project, **{"slurm.stages": {"pretrain": {"nodes": 2, "gpus_per_node": 8, "timeout_min": 1440},
                                        "detect": {"gpus_per_node": 8}, "segment": {"gpus_per_node": 8}, "evaluate": {"gpus_per_node": 1}},
                       "slurm.profiles": {}})  # the kind layer alone (the shipped paper profile's settings would override it)
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
    assert fpn.upstream == ["data-paper@ade20k", "pretrain@paper-secvit_tiny"]  # the study's stages, as DVC links them
    # per table: table 4 alone, and with the pretraining it needs
    own, upstream = p.per_table()["table4"]
    assert own == pytest.approx(sum(by[s].device_hours for s in by if s.startswith("detect@")))
    assert upstream == pytest.approx(own + pre.device_hours)
    # the peers apart; H100 halves the compute
    peer = by["pretrain@paper-pacavit_tiny"]
    assert peer.peer and peer.tables == [] and not pre.peer and pre.tables == ["table1", "table6"]
    h100 = plan("paper", project / "params.yaml", gpu_default("h100"), "slurm", flops, only=TINY[:1])
    assert h100.stages[0].device_hours == pytest.approx(pre.device_hours / 2, rel=0.05)
    text = render(p)
    for line in ("pretrain@paper-secvit_tiny", "pretrain@paper-pacavit_tiny (peer)", "total:", "of which the peers", "table4", "assumptions:"):
        assert line in text, line


def test_plan_takes_each_stages_slurm_settings_as_dispatch_does(tmp_path, repo_root, flops):
    """Profile and run layers, not the stage kind alone: the plan's devices and time limit are the job's settings."""
    from secvit.study import load_study

    project = make_project(tmp_path, repo_root)
    _edit(project, **{"slurm.profiles.paper": {"gpus_per_node": 8, "timeout_min": 1440, "stages": {"evaluate": {"gpus_per_node": 1}}},
                      "slurm.runs": {"secvit_tiny": {"nodes": 2}}})
    p = plan("paper", project / "params.yaml", gpu_default("a100"), "slurm", flops, only=TINY[:3])
    study = load_study(project / "params.yaml")
    for cost in p.stages:
        job = study.slurm.for_stage(study[cost.stage])  # what `secvit repro --executor slurm` submits
        assert (cost.devices, cost.timeout_min) == (job.nodes * job.gpus_per_node, job.timeout_min), cost.stage
    # its run's 2 nodes of the profile's 8 GPUs; evaluation's 1 GPU on each (its run's too); the peer's 1 node
    assert {c.stage: c.devices for c in p.stages} == {TINY[0]: 16, TINY[1]: 2, TINY[2]: 8}


def test_plan_is_within_1_5x_of_published_training_costs(tmp_path, repo_root, flops):
    """Every stage kind with a published reference (pretraining: Swin-B, PVTv2-b5; every detection setting: detectron2's
    Mask R-CNN 1x and 3x, Cascade Mask R-CNN 3x, RetinaNet 1x), converted at the stated GPU ratio and scaled by FLOPs,
    is within 1.5x of it; `secvit plan` prints them with sources. Both sides of each ratio count GFLOPs per image
    alike: a pretraining stage's model at 224 as table 1 prints Swin-B's, a detection stage's training work per image
    and the reference's by the same function (on the stage's whole-model figure and the reference's recorded count)."""
    import mmdet

    from secvit.bench.references import mmdet_config
    from secvit.cost.dense import DETECTION_SIZE, detector_training_gflops
    from secvit.cost.flops import dense_gflops
    from secvit.cost.references import CONVENTION, MMDET_VERSION, PUBLISHED, UNCHECKED, compare
    from secvit.downstream.config import DETECTION_CONFIGS, config_file
    from secvit.study import load_study

    # the FLOPs counted on mmdet's configs (python -m secvit.bench.references) are of the mmdet the lock installs
    assert mmdet.__version__ == MMDET_VERSION
    assert {r.setting for r in PUBLISHED if r.kind == "detect"} == {f"-{d}-{s}" for d, s in DETECTION_CONFIGS}
    project = make_project(tmp_path, repo_root)
    only = ["pretrain@paper-secvit_tiny", "pretrain@paper-pacavit_tiny", "detect@paper-secvit_tiny-mask_rcnn-1x",
            "detect@paper-secvit_small-mask_rcnn-3x_ms", "detect@paper-secvit_tiny-retinanet-1x",
            "detect@paper-secvit_small-cascade_mask_rcnn-3x_ms"]
    p = plan("paper", project / "params.yaml", gpu_default("a100"), "slurm", flops, only=only)
    found = compare(p)
    assert {c.reference for c in found} == set(PUBLISHED) and {c.stage for c in found} == set(only)
    for c in found:
        assert 1 / 1.5 <= c.ratio <= 1.5, (c.reference.model, c.stage, c.ratio)
    assert {r.kind for r in PUBLISHED} == {"pretrain", "detect"} == set(CONVENTION) and any(what == "segment" for what, _ in UNCHECKED)
    # like for like: each stage's GFLOPs per image, and each detector's recorded ones, counted as CONVENTION says
    study, costs = load_study(project / "params.yaml"), {s.stage: s for s in p.stages}
    for name in only:
        stage = study[name]
        if stage.kind == "pretrain":
            assert costs[name].gflops_per_image == pytest.approx(flops(stage.model, 224)[0]), name
            continue
        setting = {k: v for k, v in stage.options if k in ("detector", "schedule")}
        whole = dense_gflops(stage.tables[0], setting, stage.model, DETECTION_SIZE, DETECTION_SIZE, flops)
        path = str(config_file(DETECTION_CONFIGS[(setting["detector"], setting["schedule"])], stage.model)[0])
        assert costs[name].gflops_per_image == pytest.approx(detector_training_gflops(path, whole, flops)), name
    for ref in PUBLISHED:
        if ref.kind == "detect":
            counted = ref.counted
            # recorded to 0.1 GFLOPs, as is the count it comes from; a whole-model figure (260 for Mask R-CNN) fails
            training = detector_training_gflops(mmdet_config(counted.config), counted.whole_gflops, flops, counted.mask_heads)
            assert ref.gflops == pytest.approx(training, abs=0.1) and ref.gflops < 0.85 * counted.whole_gflops, ref.model
    text = render(p)
    assert "against published training costs" in text and "not checked: segment" in text and "of detect stages and figures alike" in text
    for ref in PUBLISHED:
        assert ref.model in text and ref.source in text
    # the same stages on an H100 plan: converted at the H100's rate, the same ratios but for the start-up and
    # checkpoint writes, which do not get faster with the GPU
    h100 = compare(plan("paper", project / "params.yaml", gpu_default("h100"), "slurm", flops, only=only))
    assert [c.ratio for c in h100] == pytest.approx([c.ratio for c in found], abs=0.05)


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


def test_the_released_lane_costs_no_pretraining(repo_root, flops):
    """`secvit plan --lane released`: the released checkpoints' evaluations and the dense runs from them; their first
    number comes after an evaluation, ours after a pretraining run."""
    a100 = gpu_default("a100")
    only = ["evaluate*@paper-secvit_tiny", "pretrain@paper-secvit_tiny", "detect*@paper-secvit_tiny-retinanet-1x", "data-paper@*"]
    released = plan("paper", repo_root / "params.yaml", a100, "local", flops, only=only, lanes=["released"])
    ours = plan("paper", repo_root / "params.yaml", a100, "local", flops, only=only, lanes=["ours"])
    both = plan("paper", repo_root / "params.yaml", a100, "local", flops, only=only)
    assert {s.stage for s in released.stages} == {"data-paper@imagenet", "data-paper@coco", "data-paper@ade20k",
                                                  "evaluate-released@paper-secvit_tiny", "detect-released@paper-secvit_tiny-retinanet-1x"}
    assert {s.stage for s in ours.stages} == {"data-paper@imagenet", "data-paper@coco", "data-paper@ade20k", "evaluate@paper-secvit_tiny",
                                              "pretrain@paper-secvit_tiny", "detect@paper-secvit_tiny-retinanet-1x"}
    assert both.total()[0] == pytest.approx(released.total()[0] + ours.total()[0])  # the data stages use no device
    check = next(s for s in released.stages if s.stage == "evaluate-released@paper-secvit_tiny")
    evaluate = next(s for s in ours.stages if s.stage == "evaluate@paper-secvit_tiny")
    assert check.eval_images == 2 * evaluate.eval_images == 100_000  # raw and EMA weights
    (name, hours), (own, own_hours) = released.first["released"], ours.first["ours"]
    assert name == "evaluate-released@paper-secvit_tiny" and own == "evaluate@paper-secvit_tiny" and own_hours > 50 * hours
    text = render(released)
    assert "released lane" in text and "detect-released@paper-secvit_tiny-retinanet-1x [released]" in text
    assert "first trustworthy number, released lane: evaluate-released@paper-secvit_tiny after" in text


def test_plan_errors_are_one_line(tmp_path, repo_root):
    project = make_project(tmp_path, repo_root)
    assert "error: unknown profile 'huge'" in one_line_error(secvit_in_process(project, "plan", "--profile", "huge"))
    message = one_line_error(secvit_in_process(project, "plan", "--profile", "smoke", "--throughput", "nothere.json"))
    assert "no throughput file nothere.json" in message
    message = one_line_error(secvit_in_process(project, "plan", "--profile", "smoke", "--executor", "cloud"))
    assert message == "error: unknown executor 'cloud'; choose local or slurm"
    message = one_line_error(secvit_in_process(project, "plan", "--profile", "smoke", "--lane", "theirs"))
    assert message == "error: unknown lane 'theirs'; choose released, ours or both"


class _Submitted(Exception):
    """Raised by the stand-in SLURM scheduler with the stages it was handed."""


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_repro_all_leaves_the_peers_stages_out(tmp_path, repo_root, monkeypatch, executor):
    """With `peers.smoke: false`, `secvit repro all` hands the DAG runner, or the SLURM scheduler, the stale
    stages without the peers' (DVC's stale-stage list, the runner and the scheduler are replaced here;
    tests/test_pipeline.py and tests/test_slurm.py run them for real)."""
    import shutil

    from secvit.orchestrate import repro, slurm_dag
    from secvit.orchestrate.dag import StaleStage

    project = make_project(tmp_path, repo_root)
    shutil.copy(repo_root / "dvc.yaml", project / "dvc.yaml")
    (project / ".dvc").mkdir()
    _edit(project, **{"peers.smoke": False})
    stale = [StaleStage("pretrain@smoke-secvit_tiny", "secvit pretrain", project, ()),
             StaleStage("pretrain@smoke-stvit_small", "secvit pretrain", project, ()),
             StaleStage("segment@smoke-stvit_small-semantic_fpn", "secvit segment", project, ("pretrain@smoke-stvit_small",)),
             StaleStage("tables@smoke", "secvit tables", project, ("pretrain@smoke-secvit_tiny", "pretrain@smoke-stvit_small"))]
    monkeypatch.setattr(repro, "stale_stages", lambda root, targets, explain=False: stale)
    if executor == "local":
        ran = []
        monkeypatch.setattr(repro, "run_parallel", lambda root, stages, jobs, logs: ran.append((stages, jobs)))
        monkeypatch.setattr(repro, "relink", lambda root, stages: None)
        repro.repro_local("smoke", project, jobs=1)
        (plans, jobs), = ran
        assert jobs == 1
    else:
        def scheduler(root, study, stages, *rest):
            raise _Submitted(stages)

        monkeypatch.setattr(slurm_dag, "require_slurm", lambda: None)
        monkeypatch.setattr(slurm_dag, "Scheduler", scheduler)
        with pytest.raises(_Submitted) as submitted:
            slurm_dag.repro_slurm("smoke", project)
        plans, = submitted.value.args
    assert [p.name for p in plans] == ["pretrain@smoke-secvit_tiny", "tables@smoke"]
    assert plans[1].upstream == ("pretrain@smoke-secvit_tiny",)  # the tables wait for the stages that run


def test_roi_heads_are_counted_in_mmdets_scope_after_an_mmseg_run(tmp_path):
    """A process that built an mmseg model last (its default scope is mmseg's) still counts Mask R-CNN's RoI
    heads: they are mmdet's, and mmseg's registry does not hold them."""
    from mmengine.registry import DefaultScope, init_default_scope

    from secvit.cost.dense import roi_work
    from secvit.downstream.config import CONFIGS, DETECTION_CONFIGS

    import mmseg.models  # noqa: F401  (registers mmseg's modules, as an mmseg run does)

    init_default_scope("mmseg")
    work = roi_work(str(CONFIGS / DETECTION_CONFIGS[("mask_rcnn", "1x")].format(model="secvit-tiny")), 1.0, 7.27,
                    Flops(tmp_path / "flops.json"))
    assert work.train > 0 and work.test > 0
    assert DefaultScope.get_current_instance().scope_name == "mmseg"  # the caller's scope is left as it was
