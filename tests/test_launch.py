"""A stage started as one process where several devices are visible trains with one DDP process per
device (orchestrate/launch.py); SECVIT_CPU_DEVICES stands in for GPUs on a CPU-only machine."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SECVIT, make_project, secvit

from secvit.data.synthetic import make_imagenet


def test_device_count_and_executor_settings(monkeypatch):
    from secvit.device import visible_devices
    from secvit.orchestrate.env import executor_choice
    from secvit.errors import SecvitError

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv("SECVIT_CPU_DEVICES", raising=False)
    assert visible_devices() == 1
    monkeypatch.setenv("SECVIT_CPU_DEVICES", "3")
    assert visible_devices() == 3
    for bad in ("two", "0"):
        monkeypatch.setenv("SECVIT_CPU_DEVICES", bad)
        with pytest.raises(SecvitError, match=f"^SECVIT_CPU_DEVICES must be a positive integer, got '{bad}'$"):
            visible_devices()

    monkeypatch.delenv("SECVIT_EXECUTOR", raising=False)
    assert executor_choice(None) == "local"
    monkeypatch.setenv("SECVIT_EXECUTOR", "slurm")
    assert (executor_choice(None), executor_choice("local")) == ("slurm", "local")  # the option wins
    monkeypatch.setenv("SECVIT_EXECUTOR", "cluster")
    with pytest.raises(SecvitError, match=r"^unknown executor 'cluster' \(SECVIT_EXECUTOR\); choose local or slurm$"):
        executor_choice(None)


def _last(project: Path) -> dict:
    return torch.load(project / "runs/smoke/pretrain/secvit_tiny/last.pth", map_location="cpu", weights_only=False, mmap=True)


@pytest.mark.slow
def test_resume_on_another_device_count_is_exact_or_refused(tmp_path, repo_root):
    """A stage started as one process where 2 devices are visible trains as 2 DDP processes. A run killed on
    2 devices resumes on 1 (same micro-batch of 16) and ends with exactly the weights of an uninterrupted
    2-device run: each step trains on the same micro-batches on both device counts, and halving a gradient
    is exact in floating point (accumulating 2 = averaging over 2 processes)."""
    data = tmp_path / "imagenet"
    make_imagenet(data, num_classes=4, train_per_class=32, val_per_class=4, size=40, seed=0)  # 4 steps of 32
    projects = {}
    for name in ("straight", "moved"):
        project = make_project(tmp_path / name, repo_root)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["smoke"]["pretrain"].update(epochs=1, ema=False)  # best.pth: the raw weights
        params["smoke"]["pretrain_speed"].update(checkpoint_every_steps=1, batch_per_device=16)  # 2 devices: 1 micro-batch each
        params["smoke"]["data"]["imagenet"] = str(data)
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        projects[name] = project
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="300")  # the same kernels in every process; unwrapped log lines
    straight = secvit(projects["straight"], "pretrain", "--profile", "smoke", "--model", "secvit_tiny", env={**env, "SECVIT_CPU_DEVICES": "2"})
    assert straight.returncode == 0, straight.stderr[-3000:]
    metrics = json.loads((projects["straight"] / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text())
    # global batch 32 = 16 per device x 2 processes, so no accumulation (1 process: 2 steps of 16)
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 32 and metrics["accumulation"] == 1
    assert metrics["epochs"] == 1 and 0 <= metrics["best_top1"] <= 100
    assert "best top-1" in straight.stderr  # rank 0's result reached the command

    moved = projects["moved"]
    last = moved / "runs/smoke/pretrain/secvit_tiny/last.pth"
    proc = subprocess.Popen([SECVIT, "pretrain", "--profile", "smoke", "--model", "secvit_tiny"], cwd=moved, env={**env, "SECVIT_CPU_DEVICES": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and _last(moved)["batch"] >= 2:  # 2 of the 4 steps done on 2 devices
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both of its processes
    proc.wait()
    killed = _last(moved)
    assert killed["layout"] == {"world_size": 2, "micro_batch": 16, "accumulation": 1} and 2 <= killed["batch"] < 4

    resumed = secvit(moved, "pretrain", "--profile", "smoke", "--model", "secvit_tiny", env={**env, "SECVIT_CPU_DEVICES": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"batch {2 * killed['batch']}" in resumed.stderr  # step k on 2 devices is batch 2k with accumulation 2
    # the finished runs keep their weights in best.pth (one epoch, no EMA: the raw weights), last.pth is their record
    a, b = (torch.load(p / "runs/smoke/pretrain/secvit_tiny/best.pth", map_location="cpu", weights_only=True) for p in (moved, projects["straight"]))
    assert a["weights"] == b["weights"] == "raw" and a["epoch"] == b["epoch"] == 1
    # every trained weight; BatchNorm's running statistics (used only in evaluation) are not among them:
    # under DDP they follow rank 0's micro-batches (torch's broadcast_buffers), on one device all
    weights = [k for k in b["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(weights) > 100
    for key in weights:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_resume_position_across_device_counts(repo_root):
    """Where a checkpoint of one device count resumes on another, and the one-line refusal when the
    micro-batch would change (tested on the real recipe; the run above checks the training itself)."""
    from secvit.engine.config import pretrain_config
    from secvit.engine.distributed import DistEnv
    from secvit.engine.train import layout, resumed_batch
    from secvit.errors import SecvitError

    cfg = pretrain_config(repo_root / "params.yaml", "paper", "secvit_small")
    on = {n: DistEnv(0, n, 0, torch.device("cpu")) for n in (1, 8, 12, 16, 32)}
    state = {"batch": 6, "layout": layout(cfg, on[8])}  # 3 steps of 2 x 128 on 8 devices
    assert resumed_batch(state, cfg, on[8], Path("last.pth")) == 6
    assert resumed_batch(state, cfg, on[16], Path("last.pth")) == 3  # 16 devices: one micro-batch of 128 per step
    assert resumed_batch(state, cfg, on[1], Path("last.pth")) == 48  # 1 device: 16 per step
    with pytest.raises(SecvitError) as err:
        resumed_batch(state, cfg, on[32], Path("last.pth"))
    assert str(err.value) == (
        "last.pth was trained on 8 devices in micro-batches of 128; on 32 they would be 64, which changes the run: "
        "resume on 1, 2, 4, 8 or 16 devices, or remove it to start over"
    )
    with pytest.raises(SecvitError, match="^global batch 2048 cannot be split evenly over 12 devices"):
        resumed_batch(state, cfg, on[12], Path("last.pth"))
    import dataclasses

    smaller = dataclasses.replace(cfg, batch_per_device=64)  # the speed option on the same 8 devices: 4 x 64 per step
    assert resumed_batch(state, smaller, on[8], Path("last.pth")) == 12
    legacy = {"batch": 32}  # a checkpoint from before layouts were saved: one device, 2 steps of 16 x 128
    assert resumed_batch(legacy, cfg, on[8], Path("last.pth")) == 4


def test_one_process_in_a_multi_node_allocation_says_it_uses_one_node(monkeypatch):
    from secvit.orchestrate.launch import single_node_note

    monkeypatch.delenv("SLURM_NNODES", raising=False)
    monkeypatch.delenv("SLURM_JOB_NUM_NODES", raising=False)
    assert single_node_note(8) is None  # no allocation
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    assert single_node_note(8) is None
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    note = single_node_note(8)
    assert "\n" not in note and note.startswith("note: this SLURM allocation has 2 nodes; this stage uses this node only (8 devices)")
    assert "--executor slurm" in note and "nodes: 2" in note
