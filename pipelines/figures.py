"""Stage: paper figure 4, the clusters of stages 1-3 of a trained model on one image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from secvit.pipelines.settings import load
from secvit.runs import BEST, PLOTS, results_root, run_dir


@dataclass
class FiguresConfig:
    model: str  # a pretraining run of the profile
    image: str


def figures_stage(profile: str, params: Path) -> Path:
    from secvit.visualize import visualize_clusters

    cfg = load(params, profile, "figures", FiguresConfig)
    checkpoint = run_dir(profile, cfg.model) / BEST
    out = results_root(profile) / PLOTS / "clusters.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    return visualize_clusters(cfg.image, cfg.model, checkpoint=checkpoint, out=out)
