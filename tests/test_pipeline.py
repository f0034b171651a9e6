"""The smoke DAG through real DVC in a temporary git repository."""

import json
import shutil

import pytest
import yaml
from conftest import invoke, scratch_repo

from secvit.orchestrate.dag import STAGE_TIMES, stale_stages
from secvit.runs import logs_dir


pytestmark = pytest.mark.slow  # the smoke DAG runs for minutes: outside the quick subset (-m "not slow")

ABLATION = "no_lce"
PEER = "pacavit_tiny"


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory, repo_root):
    """A scratch project after `secvit repro all` on a reduced smoke profile."""
    repo = scratch_repo(repo_root, tmp_path_factory.mktemp("dag"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sweep"]["clusters"] = params["sweep"]["clusters"][:1]
    params["ablations"]["variants"] = [ABLATION]
    # SecViT-T and one peer family end to end (pretraining, evaluation, semantic FPN); the repository's smoke
    # profile runs one model of each family the same way
    keep = {"secvit_tiny", PEER}
    params["runs"] = {k: r for k, r in params["runs"].items() if r["profile"] == "paper" or r["model"] in keep}
    params["segmentation_runs"] = {
        k: r for k, r in params["segmentation_runs"].items() if r["profile"] == "paper" or r["model"] in keep
    }
    params["smoke"]["complexity"]["models"] = ["secvit_tiny"]
    params["smoke"]["complexity"]["throughput_steps"] = 1
    params["smoke"]["data"]["generate"]["imagenet"]["train_per_class"] = 32
    # the dense stages at their smallest: 2 training steps of COCO's 4 images (4 to evaluate), 2 iterations of
    # ADE20K; the RoI heads on 1/32 of the recipe's RoIs; the FLOP counts (a real whole-model count each) on a
    # quarter of the reference sizes
    params["smoke"]["data"]["generate"]["coco"].update(train_images=4, val_images=4)
    params["smoke"]["data"]["generate"]["ade20k"].update(train_images=4, val_images=4)
    params["smoke"]["detection"]["overrides"]["roi_scale"] = 1 / 32
    params["smoke"]["detection"]["flops_size"] = {"default": [400, 640]}
    params["smoke"]["segmentation"]["overrides"]["length"] = 2
    params["smoke"]["segmentation_speed"]["checkpoint_every"] = 2
    params["smoke"]["segmentation"]["flops_size"] = {"default": [256, 1024], "secvit_tiny": [384, 384]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    first = invoke(repo, "secvit", "repro", "all", "--jobs", "2")  # stages side by side (orchestrate/dag.py)
    yield repo, first
    shutil.rmtree(repo, ignore_errors=True)  # gigabytes of checkpoints and DVC cache


def test_repro_all_builds_the_released_lane(smoke_repo):
    """The smoke profile's stand-in for the released SecViT-T (the released state-dict layout) is evaluated, and the
    dense runs from it live beside ours; the tables label the released lane's figures."""
    repo, _ = smoke_repo
    tables = (repo / "results/smoke/tables.md").read_text()
    evaluated = json.loads((repo / "results/smoke/released/pretrain/secvit_tiny/metrics.json").read_text())
    identity = json.loads((repo / "results/smoke/released/pretrain/secvit_tiny/checkpoint.json").read_text())
    assert evaluated["sha256"] == identity["sha256"] and evaluated["images"] == 128
    assert {"top1", "top1_ema", "best_top1"} <= set(evaluated) and evaluated["best_top1"] == max(evaluated["top1"], evaluated["top1_ema"])
    assert _cells(tables, "**SecViT-T**", "## Table 1")[-1].startswith(f"82.6 / {evaluated['best_top1']:.2f} (")  # released column
    for task, key in (("detection", "secvit_tiny-mask_rcnn-1x"), ("segmentation", "secvit_tiny-semantic_fpn")):
        released = json.loads((repo / f"results/smoke/released/{task}/{key}/metrics.json").read_text())
        ours = json.loads((repo / f"results/smoke/{task}/{key}/metrics.json").read_text())
        assert (released["lane"], released["weights_sha256"], ours["lane"]) == ("released", identity["sha256"], "ours")
        assert (repo / f"runs/smoke/released/{task}/{key}").is_dir() and (repo / f"runs/smoke/{task}/{key}").is_dir()
    fpn = json.loads((repo / "results/smoke/released/segmentation/secvit_tiny-semantic_fpn/metrics.json").read_text())
    assert _cells(tables, "**SecViT-T** (released backbone)", "Semantic FPN (head")[2].startswith(f"47.2 / {fpn['miou']:.2f} (")


def test_the_released_lane_follows_its_file_not_our_recipe(smoke_repo):
    """A new pretraining recipe leaves the released lane current; a new released file, or a new expected hash,
    makes it stale."""
    repo, _ = smoke_repo
    released = {"evaluate-released@smoke-secvit_tiny", "detect-released@smoke-secvit_tiny-mask_rcnn-1x",
                "segment-released@smoke-secvit_tiny-semantic_fpn"}
    params = (repo / "params.yaml").read_text()
    stand_in = repo / "data/smoke/released/secvit_tiny.pth"
    aside = stand_in.with_name("aside.pth")
    try:
        edited = yaml.safe_load(params)
        edited["smoke"]["pretrain"]["epochs"] = 3
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        stale = {s.name for s in stale_stages(repo, ["tables@smoke"])}
        assert "pretrain@smoke-secvit_tiny" in stale and not stale & released, stale
        edited = yaml.safe_load(params)
        edited["released"]["checkpoints"]["smoke-secvit_tiny"]["sha256"] = "0" * 64
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        assert "released.checkpoints.smoke-secvit_tiny.sha256" in invoke(repo, "dvc", "status", "evaluate-released@smoke-secvit_tiny").stdout
        (repo / "params.yaml").write_text(params)
        stand_in.rename(aside)  # another file in its place (never written through the link into DVC's cache)
        data = aside.read_bytes()
        stand_in.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # another last byte (a zip ends in zeros)
        stale = {s.name: s.conditional for s in stale_stages(repo, ["tables@smoke"])}
        assert stale["evaluate-released@smoke-secvit_tiny"] is False and all(stale[s] for s in released - {"evaluate-released@smoke-secvit_tiny"})
        assert not any(name.startswith(("pretrain@", "detect@", "segment@")) for name in stale), stale
    finally:
        (repo / "params.yaml").write_text(params)
        if aside.exists():
            aside.replace(stand_in)


def test_repro_all_builds_tables_and_figures(smoke_repo):
    repo, first = smoke_repo
    assert "results/smoke/tables.md" in first.stdout + first.stderr
    events = [line.split()[0] for line in first.stderr.splitlines() if line.startswith(("started ", "done "))]
    assert events[:2] == ["started", "started"] and events.count("done") == events.count("started")  # 2 side by side
    # each stage's wall and CPU time, as the runner ran it (benchmarks/plan_vs_run.py compares them with the plan)
    times = json.loads((repo / logs_dir("smoke") / STAGE_TIMES).read_text())
    assert set(times) == {line.split()[1] for line in first.stderr.splitlines() if line.startswith("done ")}
    assert {(t["jobs"], t["threads"]) for t in times.values()} == {(2, 1)} and all(t["cpu_seconds"] > 0 for t in times.values())
    tables = (repo / "results/smoke/tables.md").read_text()
    assert (repo / "results/tables.md").read_text() == tables  # the pointer to the profile just built
    assert (repo / "results/plots/clusters.png").exists()
    for n in range(1, 9):
        assert f"## Table {n}:" in tables
    assert "Profile: `smoke`" in tables
    complexity = json.loads((repo / "results/smoke/complexity.json").read_text())
    tiny = next(r for r in complexity["rows"] if r["key"] == "secvit_tiny")
    assert tiny["params"] == 14_981_800
    assert f"15 / {tiny['params'] / 1e6:.2f}" in tables  # complexity is real even in smoke
    top1 = json.loads((repo / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text())["best_top1"]
    assert f"82.6 / {top1:.2f}" in tables
    assert "secvit_small-c64-16-4-1" in {r["key"] for r in complexity["rows"]}
    for png in ("top1_vs_flops", "training_curves", "clusters"):
        assert (repo / f"results/smoke/plots/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_repro_all_fills_detection_and_segmentation(smoke_repo):
    """The four detection settings and both heads train, evaluate and reach tables 3-5 (smoke figures)."""
    repo, _ = smoke_repo
    tables = (repo / "results/smoke/tables.md").read_text()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for task, runs, keys in (
        ("detection", params["detection_runs"], ("ap_b", "ap50_b", "ap75_b")),
        ("segmentation", params["segmentation_runs"], ("miou", "macc", "aacc")),
    ):
        smoke = [k.removeprefix("smoke-") for k, r in runs.items() if r["profile"] == "smoke"]
        assert len(smoke) == (4 if task == "detection" else 3)
        for key in smoke:
            metrics = json.loads((repo / f"results/smoke/{task}/{key}/metrics.json").read_text())
            for name in keys + ("ap_m", "ap50_m", "ap75_m") * ("rcnn" in key):
                assert 0 <= metrics[name] <= 100, (key, name)
            if "retinanet" in key:  # no large objects in the generated images: pycocotools' -1 is "not measured"
                assert metrics["ap_l_b"] is None and 0 <= metrics["ap_s_b"] <= 100
            assert metrics["params_m"] > 10 and metrics["gflops"] > 10, key
            assert (repo / f"results/smoke/{task}/{key}/dvclive/plots/metrics/train/loss.tsv").is_file()
            row = "`secvit_tiny` (ours, not in the paper)"
            assert row in tables
    mask_1x = json.loads((repo / "results/smoke/detection/secvit_tiny-mask_rcnn-1x/metrics.json").read_text())
    assert f"47.7 / {mask_1x['ap_b']:.2f}" in tables  # the paper's SecViT-T row of table 4 holds our figure
    fpn = json.loads((repo / "results/smoke/segmentation/secvit_tiny-semantic_fpn/metrics.json").read_text())
    assert f"47.2 / {fpn['miou']:.2f}" in tables
    peer = json.loads((repo / f"results/smoke/segmentation/{PEER}-semantic_fpn/metrics.json").read_text())
    cells = _cells(tables, f"`{PEER}` (ours, not in the paper)", "mIoU")
    assert cells[:3] == [f"– / {peer['params_m']:.2f}", f"– / {peer['gflops']:.2f}", f"– / {peer['miou']:.2f}"]


def _cells(tables: str, model: str, after: str = "") -> list[str]:
    """The cells after the model cell of the first table row for ``model`` below the first line holding ``after``."""
    lines = tables.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    row = next(line for line in lines[start:] if line.startswith(f"| {model} "))
    return [c.strip() for c in row.strip("|").split("|")][1:]


def test_repro_all_trains_the_ablations_and_peers(smoke_repo):
    """Table 6's ablation row holds its run's top-1 and complexity; the peer's run appears beside table 1."""
    repo, _ = smoke_repo
    tables = (repo / "results/smoke/tables.md").read_text()
    complexity = {r["key"]: r for r in json.loads((repo / "results/smoke/complexity.json").read_text())["rows"]}
    ablated = complexity[f"secvit_tiny-{ABLATION}"]
    assert ablated["ablation"] == ABLATION and ablated["params"] == 14_885_288  # without the 5x5 LCE convs
    metrics = json.loads((repo / f"results/smoke/pretrain/secvit_tiny-{ABLATION}/metrics.json").read_text())
    assert metrics["lce"] is False and metrics["epochs"] == 1  # smoke.pretrain_runs.<run>.epochs
    cells = _cells(tables, "**w/o LCE**", "## Table 6")
    assert cells[0] == "15 / 14.89 (-0.11)" and cells[1].startswith(f"2.5 / {ablated['gflops_no_attn']:.2f} (")
    assert cells[2].startswith(f"82.4 / {metrics['best_top1']:.2f} (")
    peer = json.loads((repo / f"results/smoke/pretrain/{PEER}/metrics.json").read_text())
    assert _cells(tables, f"`{PEER}` (ours, not in the paper's table 1)")[:3] == ["– / –", "– / –", f"– / {peer['best_top1']:.2f}"]
    assert (repo / f"results/smoke/pretrain/{PEER}/eval.json").is_file()


def test_checkpoints_exist_once_on_disk(smoke_repo):
    """Outputs are links into DVC's cache, not copies; finished runs keep what the tables and downstream stages
    need: best.pth and a weightless last.pth (pretraining), the latest checkpoint without optimizer state (dense)."""
    repo, _ = smoke_repo
    checkpoints = list((repo / "runs/smoke").rglob("*.pth"))
    assert checkpoints and all(p.stat().st_nlink >= 2 for p in checkpoints), [p for p in checkpoints if p.stat().st_nlink < 2]
    for last in (repo / "runs/smoke/pretrain").glob("*/last.pth"):
        assert last.stat().st_size < 1e5 and last.with_name("best.pth").stat().st_size > 1e6, last
    for task in ("detection", "segmentation"):
        for work in (repo / "runs/smoke" / task).iterdir():
            assert len(list(work.glob("*.pth"))) == 1, work
    cache = sum(p.stat().st_size for p in (repo / ".dvc/cache").rglob("*") if p.is_file() and p.stat().st_nlink == 1)
    assert cache < 50e6, f"{cache / 1e6:.0f} MB of the cache are copies"


def test_a_code_change_reruns_the_stages_that_run_it(smoke_repo):
    repo, _ = smoke_repo
    loaders = repo / "secvit/engine/loaders.py"
    original = loaders.read_text()
    try:
        loaders.write_text(original + "\n# changed\n")
        status = invoke(repo, "dvc", "status").stdout
    finally:
        loaders.write_text(original)
    # stage names head their entries; the paper profile's stages never ran here, so only smoke ones count
    changed = {line.rstrip(":") for line in status.splitlines() if "@smoke" in line and not line[0].isspace()}
    assert {"pretrain@smoke-secvit_tiny", "evaluate@smoke-secvit_tiny"} <= changed, status
    assert not any(s.startswith(("detect@", "segment@", "complexity@")) for s in changed), status


def test_editing_how_stages_are_dispatched_reruns_nothing(smoke_repo):
    """The SLURM executor, the launcher, the command line, the study model, the cost plan and the benchmarks compute
    no stage's outputs."""
    repo, _ = smoke_repo
    edited = ["orchestrate/slurm.py", "orchestrate/launch.py", "cli/train.py", "secvit/bench/seca.py", "secvit/study/__init__.py",
              "secvit/cost/plan.py"]
    originals = {name: (repo / name).read_text() for name in edited}
    try:
        for name, text in originals.items():
            (repo / name).write_text(text + "\n# changed\n")
        status = invoke(repo, "dvc", "status").stdout
    finally:
        for name, text in originals.items():
            (repo / name).write_text(text)
    changed = {line.rstrip(":") for line in status.splitlines() if "@smoke" in line and not line[0].isspace()}
    assert not changed, status


def test_second_run_does_nothing(smoke_repo):
    repo, _ = smoke_repo
    before = {p: p.stat().st_mtime_ns for p in (repo / "results/smoke").rglob("*") if p.is_file()}
    for jobs in ("1", "2"):  # plain `dvc repro`, and the parallel runner
        again = invoke(repo, "secvit", "repro", "all", "--jobs", jobs)
        assert "Running stage" not in again.stdout and "started" not in again.stderr
        assert "Data and pipelines are up to date" in again.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (repo / "results/smoke").rglob("*") if p.is_file()}


def test_dvc_agrees_and_profiles_are_independent(smoke_repo):
    repo, _ = smoke_repo
    status = invoke(repo, "dvc", "status", "tables@smoke", "figures@smoke")
    assert "up to date" in status.stdout
    params = (repo / "params.yaml").read_text()
    try:  # a change to the paper profile leaves the smoke results valid
        edited = yaml.safe_load(params)
        edited["paper"]["pretrain"]["epochs"] = 299
        edited["paper"]["complexity"]["throughput_batch"] = 32
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        assert "up to date" in invoke(repo, "dvc", "status", "tables@smoke", "figures@smoke").stdout
        edited["smoke"]["pretrain"]["epochs"] = 3  # ...and a smoke change is seen
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        changed = invoke(repo, "dvc", "status", "pretrain@smoke-secvit_tiny").stdout
        assert "smoke.pretrain" in changed

        edited = yaml.safe_load(params)  # one run's own value: that run's stage alone
        edited["smoke"]["pretrain_runs"][PEER]["drop_path"] = 0.05
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        status = invoke(repo, "dvc", "status").stdout
        changed = {line.rstrip(":") for line in status.splitlines() if "@smoke" in line and not line[0].isspace()}
        assert changed == {f"pretrain@smoke-{PEER}"}, status

        edited = yaml.safe_load(params)  # speed, memory and logging options: nothing
        edited["smoke"]["pretrain_speed"].update(batch_per_device=8, channels_last=False, compile=True, grad_checkpointing=True, workers=2)
        for task in ("detection", "segmentation"):
            edited["smoke"][f"{task}_speed"].update(workers=3, checkpoint_every=5, keep_checkpoints=2, log_every=7, log_level="INFO")
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        assert "up to date" in invoke(repo, "dvc", "status", "tables@smoke", "figures@smoke").stdout
    finally:
        (repo / "params.yaml").write_text(params)


def test_a_moved_dataset_leaves_results_current(smoke_repo, tmp_path):
    """The dataset's identity is the data stage's manifest (files and sizes), not its path: ImageNet moved
    and verified again there, every stage that reads it stays up to date; only the data stage itself, whose
    folder setting changed, is stale."""
    repo, _ = smoke_repo
    params, checked = (repo / "params.yaml").read_text(), (repo / "results/smoke/data/imagenet.checked.json").read_bytes()
    manifest = (repo / "results/smoke/data/imagenet.json").read_bytes()
    moved = tmp_path / "fast-mount" / "imagenet"
    shutil.copytree(repo / "data/smoke/imagenet", moved)
    try:
        edited = yaml.safe_load(params)
        edited["smoke"]["data"]["imagenet"] = str(moved)
        (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        invoke(repo, "secvit", "data", "--profile", "smoke", "--dataset", "imagenet")
        assert (repo / "results/smoke/data/imagenet.json").read_bytes() == manifest
        status = invoke(repo, "dvc", "status", "--json").stdout
        assert {name for name in json.loads(status) if "smoke" in name} == {"data-smoke@imagenet"}, status
    finally:
        (repo / "params.yaml").write_text(params)
        (repo / "results/smoke/data/imagenet.checked.json").write_bytes(checked)
