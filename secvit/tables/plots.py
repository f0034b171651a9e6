"""PNG figures of one profile's results, written to ``results/<profile>/plots/``.

* ``top1_vs_flops.png``: the paper's figure 2 (top-1 vs GFLOPs of Table 1) next to
  our measured points.
* ``training_curves.png``: train loss and val top-1 (raw, EMA) per epoch of every
  pretraining run, from the DVCLive TSV files.

Figures have fixed sizes and no software/date metadata, so identical data
gives identical PNG files.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from secvit.tables.paper import PaperTable, load_paper_tables  # noqa: E402
from secvit.runs import CURVES as RUN_CURVES, PLOTS, PRETRAIN, task_results  # noqa: E402
from secvit.tables.results import Results, load_results  # noqa: E402

__all__ = ["plot_top1_vs_flops", "plot_training_curves", "read_curve", "write_plots"]

DPI = 100
PNG_METADATA = {"Software": None}
CURVES = {
    "loss": "plots/metrics/train/loss.tsv",
    "top1": "plots/metrics/val/top1.tsv",
    "top1_ema": "plots/metrics/val/top1_ema.tsv",
}
Point = tuple[str, float, float]


def _save(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return out


def _placeholder(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------
# Figure 2: top-1 vs GFLOPs


def paper_points(tables: Mapping[str, PaperTable]) -> tuple[list[Point], list[Point]]:
    """(competitors, SecViT) points ``(name, gflops, top1)`` of Table 1."""
    others: list[Point] = []
    ours: list[Point] = []
    for _, row in tables["table1"].iter_rows():
        if row.get("gflops") is None or row.get("top1") is None:
            continue
        point = (str(row["model"]), float(row["gflops"]), float(row["top1"]))
        (ours if "ours" in row else others).append(point)
    return others, sorted(ours, key=lambda p: p[1])


def measured_points(results: Results) -> list[Point]:
    """``(run, gflops_no_attn, best_top1)`` of every run with both a top-1 and a complexity row."""
    points: list[Point] = []
    for key, metrics in results.pretrain.items():
        top1 = metrics.get("best_top1")
        gflops = (results.complexity.get(key) or {}).get("gflops_no_attn")
        if isinstance(top1, (int, float)) and isinstance(gflops, (int, float)):
            points.append((key, float(gflops), float(top1)))
    return sorted(points, key=lambda p: (p[1], p[0]))


def _draw_paper(ax: Axes, others: list[Point], ours: list[Point], faded: bool) -> None:
    alpha = 0.25 if faded else 1.0
    ax.scatter([p[1] for p in others], [p[2] for p in others], s=18, color="tab:gray", alpha=alpha,
               label="other models (paper)")
    ax.plot([p[1] for p in ours], [p[2] for p in ours], "o-", color="tab:red", alpha=alpha, label="SecViT (paper)")
    if not faded:
        for name, x, y in ours:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8, color="tab:red")


def plot_top1_vs_flops(results: Results, tables: Mapping[str, PaperTable], out: str | Path) -> Path:
    """Paper figure 2 (left) and the same axes with our measured points (right)."""
    others, ours = paper_points(tables)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), sharey=False)
    _draw_paper(left, others, ours, faded=False)
    left.set_title("paper (Table 1)")
    points = measured_points(results)
    right.set_title(f"reproduced ({results.profile})")
    if points:
        _draw_paper(right, others, ours, faded=True)
        right.scatter([p[1] for p in points], [p[2] for p in points], marker="*", s=120, color="tab:blue",
                      zorder=3, label="ours (measured)")
        for name, x, y in points:
            right.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8, color="tab:blue")
        right.legend(loc="lower right", fontsize=8)
    else:
        _placeholder(right, "nothing measured yet:\nno run with both a best top-1 and GFLOPs")
    for ax in (left, right):
        ax.set_xlabel("GFLOPs (224x224, paper convention)")
        ax.set_ylabel("ImageNet-1K top-1 (%)")
        ax.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out))


# ---------------------------------------------------------------------------
# Training curves


def read_curve(path: Path) -> list[tuple[float, float]]:
    """``(step, value)`` pairs of one DVCLive TSV (header ``step<TAB>name``); [] if absent or empty."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if not header or "step" not in header:
            return []
        step_col, value_col = header.index("step"), len(header) - 1
        points = []
        for row in reader:
            try:
                points.append((float(row[step_col]), float(row[value_col])))
            except (IndexError, ValueError):
                continue
    return sorted(points)


def find_curves(results_dir: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{run: {curve name: points}}`` for every pretraining run that has at least one curve."""
    root = task_results(results_dir, PRETRAIN)
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {}
    if not root.is_dir():
        return runs
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        curves = {name: read_curve(run / RUN_CURVES / rel) for name, rel in CURVES.items()}
        if any(curves.values()):
            runs[run.name] = curves
    return runs


def plot_training_curves(results_dir: str | Path, out: str | Path) -> Path:
    """Train loss and val top-1 (solid raw, dashed EMA) per epoch of every run found."""
    runs = find_curves(Path(results_dir))
    fig, (loss_ax, top1_ax) = plt.subplots(1, 2, figsize=(13, 5))
    if not runs:
        for ax in (loss_ax, top1_ax):
            _placeholder(ax, "no pretraining curves found\n(pretrain/<run>/dvclive/plots/metrics/*.tsv)")
    colors = plt.get_cmap("tab10")
    for i, (run, curves) in enumerate(runs.items()):
        color = colors(i % 10)
        for ax, name, style, label in (
            (loss_ax, "loss", "-", run),
            (top1_ax, "top1", "-", f"{run} raw"),
            (top1_ax, "top1_ema", "--", f"{run} EMA"),
        ):
            points = curves[name]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, marker=".", color=color, label=label)
    if runs:
        loss_ax.set(title="train loss", xlabel="epoch", ylabel="loss")
        top1_ax.set(title="val top-1", xlabel="epoch", ylabel="top-1 (%)")
        for ax in (loss_ax, top1_ax):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out))


def write_plots(results_dir: str | Path, profile: str) -> list[Path]:
    """Write every figure into ``<results_dir>/plots/`` and return their paths."""
    results_dir = Path(results_dir)
    out = results_dir / PLOTS
    results = load_results(results_dir, profile)
    tables = load_paper_tables()
    return [
        plot_top1_vs_flops(results, tables, out / "top1_vs_flops.png"),
        plot_training_curves(results_dir, out / "training_curves.png"),
    ]
