"""A stage started as one process where several devices are visible trains with one DDP process per
device (orchestrate/launch.py); SECVIT_CPU_DEVICES stands in for GPUs on a CPU-only machine."""

import json
import os

import pytest
from conftest import make_project, secvit

from secvit.data.synthetic import make_imagenet


@pytest.mark.slow
def test_one_process_with_two_devices_trains_as_two_ddp_processes(tmp_path, repo_root):
    project = make_project(tmp_path, repo_root)
    make_imagenet(project / "data/smoke/imagenet", num_classes=4, train_per_class=32, val_per_class=8, size=48, seed=0)
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("    epochs: 2\n", "    epochs: 1\n", 1))
    env = {**os.environ, "SECVIT_CPU_DEVICES": "2"}
    env.pop("WORLD_SIZE", None)
    result = secvit(project, "pretrain", "--profile", "smoke", "--model", "secvit_tiny", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((project / "results/smoke/pretrain/secvit_tiny/metrics.json").read_text())
    # smoke: global batch 32 = 16 per device x 2 processes, so no accumulation (1 process: 2 steps of 16)
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 32 and metrics["accumulation"] == 1
    assert metrics["epochs"] == 1 and 0 <= metrics["best_top1"] <= 100
    assert "best top-1" in result.stderr  # rank 0's result reached the command


def test_device_count_and_executor_settings(monkeypatch):
    from secvit.orchestrate.launch import visible_devices
    from secvit.orchestrate.slurm import executor_choice
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
