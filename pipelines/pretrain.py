"""Stage: ImageNet pretraining of one backbone (checkpoints in runs/, metrics in results/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secvit.pipelines.settings import data_config
from secvit.engine.config import pretrain_config
from secvit.pipelines.sweep import ablation_config, parse_clusters, sweep_config
from secvit.errors import SecvitError
from secvit.models.variants import ablation_options
from secvit.runs import results_dir, run_dir, run_key

__all__ = ["pretrain_stage", "results_dir", "run_dir"]  # the run paths live in secvit.runs


def pretrain_stage(
    profile: str, model: str | None, params: Path, clusters: str | None = None, ablation: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Pretrain ``model``; with ``clusters``: the sweep model at that cluster setting (table 7); with
    ``ablation``: the ablation model with that table-6 ablation. ``device``: see :func:`secvit.gpu.require_device`."""
    from secvit.engine.train import pretrain
    from secvit.gpu import require_device
    from secvit.models.registry import check_model

    require_device("pretrain", profile, params, device)
    if model is None:
        if clusters is None and ablation is None:
            raise SecvitError("give --model, --clusters for a run of the table-7 sweep, or --ablation for a table-6 ablation")
        model = ablation_config(params).model if ablation else sweep_config(params).model
    check_model(model)  # before the recipe (drop_path per model) and the dataset
    options = ablation_options(ablation, model)
    data = data_config(params, profile)
    parsed = parse_clusters(clusters) if clusters else None
    name = run_key(model, parsed, ablation)  # the model's own clusters: its plain run
    cfg = pretrain_config(params, profile, name)
    if run_key(model, parsed) != model:
        options["clusters"] = parsed
    return pretrain(
        model,
        cfg,
        data.root("imagenet"),
        run_dir(profile, name),
        results_dir(profile, name),
        expected=data.expected_for("imagenet"),
        model_kwargs=options or None,
    )
