"""Stage: paper figure 4, the clusters of stages 1-3 of a trained model on one image."""

from __future__ import annotations

from pathlib import Path

from secvit.params import load_section
from secvit.runs import BEST, PLOTS, results_root, run_dir
from secvit.visualize import FiguresConfig, figure_image, visualize_clusters


def figures_stage(profile: str, params: Path) -> Path:
    cfg = load_section(params, profile, "figures", FiguresConfig)
    image = figure_image(profile, params)
    checkpoint = run_dir(profile, cfg.model) / BEST
    out = results_root(profile) / PLOTS / "clusters.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    return visualize_clusters(image, cfg.model, checkpoint=checkpoint, out=out)
