"""Multi-node DDP on a real two-node SLURM cluster: `slurm/cluster.sh start --nodes 2` runs two slurmd,
each in its own network and UTS namespace (hosts secvit-n1 10.77.0.2 and secvit-n2 10.77.0.3), so a job
of 2 nodes really spans two hosts. Run with `pytest -m slurm2` (skipped where that cluster is down)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, scratch_repo, tool_env

from secvit.data.synthetic import make_imagenet

CONF = Path(os.environ.get("SECVIT_SLURM2_DIR", "/tmp/secvit-slurm2")) / "etc/slurm.conf"
pytestmark = [pytest.mark.slurm2, pytest.mark.usefixtures("two_nodes")]


@pytest.fixture(scope="module")
def two_nodes() -> None:
    status = subprocess.run(["bash", str(ROOT / "slurm/two_nodes.sh"), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.skip("the two-node SLURM cluster is not up; run slurm/cluster.sh start --nodes 2")


def env() -> dict[str, str]:
    return {**tool_env(), "SLURM_CONF": str(CONF), "OMP_NUM_THREADS": "1"}


def invoke(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def project(dest: Path, stage: dict, data: Path) -> Path:
    params = {"smoke.pretrain.epochs": 1, "slurm.partition": "two", "slurm.stages": stage, "smoke.data.imagenet": str(data)}
    return scratch_repo(ROOT, dest, untracked=True, params=params)


def _best(repo: Path) -> dict:
    """The finished run's weights: best.pth (a finished run's last.pth is its record, without weights)."""
    return torch.load(repo / "runs/smoke/pretrain/secvit_tiny/best.pth", map_location="cpu", weights_only=True)


def test_pretraining_across_two_nodes_equals_two_tasks_on_one(tmp_path):
    """One job of 2 nodes x 1 task: the ranks run on different hosts and the weights after one epoch are
    those of 1 node x 2 tasks (same world size, same global batch split)."""
    data = tmp_path / "imagenet"
    make_imagenet(data, num_classes=4, train_per_class=32, val_per_class=4, size=40, seed=0)  # 4 steps of 32
    cpu = {"cpus_per_task": 1, "mem_gb": 3}
    two = {"nodes": 2, "tasks_per_node": 1, **cpu}
    spread = project(tmp_path / "spread", {"pretrain": two, "segment": two}, data)
    packed = project(tmp_path / "packed", {"pretrain": {"nodes": 1, "tasks_per_node": 2, **cpu}}, data)
    for repo in (spread, packed):
        invoke(repo, "secvit", "pretrain", "--profile", "smoke", "--model", "secvit_tiny", "--executor", "slurm")
    a = json.loads((spread / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text())
    b = json.loads((packed / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text())
    assert a["world_size"] == b["world_size"] == 2 and a["micro_batch"] == 8 and a["accumulation"] == 2
    assert a["hosts"] == ["secvit-n1", "secvit-n2"]  # rank 0 on the first node, rank 1 on the second
    assert len(set(b["hosts"])) == 1
    best_a, best_b = _best(spread), _best(packed)
    assert best_a["weights"] == best_b["weights"] and best_a["epoch"] == best_b["epoch"] == 1
    wa, wb = best_a["model"], best_b["model"]
    assert wa.keys() == wb.keys()
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key
    assert a["best_top1"] == b["best_top1"] and a["final_top1_ema"] == b["final_top1_ema"]

    # a segmentation stage (MMSegmentation, gloo) as one job of 2 nodes, from the pretrained weights above
    invoke(spread, "secvit", "data", "--profile", "smoke", "--dataset", "ade20k")
    invoke(spread, "secvit", "segment", "--profile", "smoke", "--model", "secvit_tiny", "--head", "semantic_fpn", "--executor", "slurm")
    seg = json.loads((spread / "results/smoke/segmentation/secvit_tiny-semantic_fpn/metrics.json").read_text())
    assert seg["world_size"] == 2 and 0 <= seg["miou"] <= 100
