"""Stage: ImageNet pretraining of one backbone (checkpoints in runs/, metrics in results/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.settings import data_config, load
from pipelines.sweep import parse_clusters, sweep_config
from secvit.errors import SecvitError
from secvit.engine.config import PretrainConfig
from secvit.runs import results_dir, run_dir, run_key

__all__ = ["pretrain_stage", "results_dir", "run_dir"]  # the run paths live in secvit.runs


def pretrain_stage(profile: str, model: str | None, params: Path, clusters: str | None = None) -> dict[str, Any]:
    """Pretrain ``model`` (with ``clusters``: the sweep model at that cluster setting)."""
    from secvit.engine.train import pretrain
    from secvit.models.registry import check_model

    if model is None:
        if clusters is None:
            raise SecvitError("give --model, or --clusters for a run of the table-7 sweep")
        model = sweep_config(params).model
    check_model(model)  # before the recipe (drop_path per model) and the dataset
    cfg = load(params, profile, "pretrain", PretrainConfig)
    data = data_config(params, profile)
    parsed = parse_clusters(clusters) if clusters else None
    name = run_key(model, parsed)  # the model's own clusters: its plain run
    return pretrain(
        model,
        cfg,
        data.root("imagenet"),
        run_dir(profile, name),
        results_dir(profile, name),
        expected=data.expected_for("imagenet"),
        model_kwargs={"clusters": parsed} if name != model else None,
    )
