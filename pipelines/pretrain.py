"""Stage: ImageNet pretraining of one backbone (checkpoints in runs/, metrics in results/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.settings import data_config, load
from pipelines.sweep import parse_clusters, run_name, sweep_config
from secvit.errors import SecvitError
from secvit.engine.config import PretrainConfig


def run_dir(profile: str, run: str) -> Path:
    """Checkpoints of a run (persisted by DVC across failed or interrupted stages)."""
    return Path("runs") / profile / "pretrain" / run


def results_dir(profile: str, run: str) -> Path:
    """Metrics and curves of a run."""
    return Path("results") / profile / "pretrain" / run


def pretrain_stage(profile: str, model: str | None, params: Path, clusters: str | None = None) -> dict[str, Any]:
    """Pretrain ``model`` (with ``clusters``: the sweep model at that cluster setting)."""
    from secvit.engine.train import pretrain

    if model is None:
        if clusters is None:
            raise SecvitError("give --model, or --clusters for a run of the table-7 sweep")
        model = sweep_config(params).model
    cfg = load(params, profile, "pretrain", PretrainConfig)
    data = data_config(params, profile)
    parsed = parse_clusters(clusters) if clusters else None
    name = run_name(model, parsed)
    return pretrain(
        model,
        cfg,
        data.root("imagenet"),
        run_dir(profile, name),
        results_dir(profile, name),
        expected=data.expected_for("imagenet"),
        model_kwargs={"clusters": parsed} if parsed else None,
    )
