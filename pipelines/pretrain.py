"""Stage: ImageNet pretraining of one backbone (checkpoints in runs/, metrics in results/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secvit.device import require_device
from secvit.engine.config import pretrain_config
from secvit.engine.train import pretrain
from secvit.errors import SecvitError
from secvit.models.registry import check_model
from secvit.models.variants import ablation_options
from secvit.data.inputs import stage_data
from secvit.runs import ablation_config, parse_clusters, results_dir, run_dir, run_key, sweep_config

__all__ = ["pretrain_stage", "results_dir", "run_dir"]  # the run paths live in secvit.runs


def pretrain_stage(
    profile: str, model: str | None, params: Path, clusters: str | None = None, ablation: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Pretrain ``model``; with ``clusters``: the sweep model at that cluster setting (table 7); with
    ``ablation``: the ablation model with that table-6 ablation. ``device``: see :func:`secvit.device.require_device`."""
    require_device("pretrain", profile, params, device)
    if model is None:
        if clusters is None and ablation is None:
            raise SecvitError("give --model, --clusters for a run of the table-7 sweep, or --ablation for a table-6 ablation")
        model = ablation_config(params).model if ablation else sweep_config(params).model
    check_model(model)  # before the recipe (drop_path per model) and the dataset
    options = ablation_options(ablation, model)
    parsed = parse_clusters(clusters) if clusters else None
    name = run_key(model, parsed, ablation)  # the model's own clusters: its plain run
    cfg = pretrain_config(params, profile, name)
    imagenet = stage_data(profile, params, "imagenet")  # checked, and verified by the data stage
    if run_key(model, parsed) != model:
        options["clusters"] = parsed
    return pretrain(
        model,
        cfg,
        imagenet.root,
        run_dir(profile, name),
        results_dir(profile, name),
        model_kwargs=options or None,
        exclude=imagenet.bad,
    )
