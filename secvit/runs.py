"""Names and places of a profile's runs, defined once for the stages, the command line and the tables.

Layout, relative to the project directory (``dvc.yaml`` spells the same paths out literally)::

    runs/<profile>/<task>/<run>/       checkpoints (last.pth, best.pth), the skip log
    results/<profile>/                 complexity.json, tables.md, plots/
    results/<profile>/<task>/<run>/    metrics.json, eval.json, dvclive/

``<task>`` is ``pretrain`` for ImageNet pretraining, ``detection`` and ``segmentation`` for the
dense tasks (run names from :func:`downstream_key`). ``<run>`` is :func:`run_key`: the model
name, for the table-7 sweep ``<model>-c<clusters joined by ->``, for a table-6 ablation
``<model>-<ablation>`` (``secvit_tiny-no_lce``). The released-weights lane (:data:`LANES`) keeps its runs apart,
below ``released/``: ``results/<profile>/released/pretrain/<model>/`` (the authors' checkpoint evaluated here)
and ``runs|results/<profile>/released/<task>/<run>/`` (dense runs from released backbones), so both lanes' runs
of one setting exist side by side (:func:`lane_task`). Which sweep and ablation runs a study has is
params.yaml's ``sweep`` (table 7, the number of clusters per stage) and ``ablations`` (table 6),
shared by both profiles: :func:`sweep_config`, :func:`ablation_config`. This module itself imports
neither torch nor timm (importing the ``secvit`` package still does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError
from secvit.models.variants import ABLATIONS, VARIANTS, default_clusters
from secvit.params import from_section, load_params, section

__all__ = [
    "LANES", "OURS", "RELEASED", "lane_task", "BEST", "COMPLEXITY", "CURVES", "DETECTION", "EVAL", "LAST", "LOGS", "METRICS", "PLOTS", "PRETRAIN", "SEGMENTATION",
    "TABLES", "AblationConfig", "SweepConfig", "ablation_config", "downstream_key", "logs_dir", "parse_clusters", "results_dir",
    "results_root", "run_dir", "run_key", "sweep_config", "task_results", "tables_file",
]

#: The task name of ImageNet pretraining runs.
PRETRAIN = "pretrain"
#: The task names of the dense-prediction runs.
DETECTION = "detection"
SEGMENTATION = "segmentation"
#: The study's two lanes: ``ours`` (our pretraining, and dense runs from it) and ``released`` (the authors'
#: released checkpoints evaluated here, and dense runs from them).
OURS = "ours"
RELEASED = "released"
LANES = (OURS, RELEASED)
#: A run's resumable checkpoint: model, EMA, optimizer and scheduler state, position, history;
#: once the run has finished, its record only (position, history, settings; no weights).
LAST = "last.pth"
#: A run's best epoch (the paper's convention): ``model`` holds the better of its raw and EMA
#: weights, named by ``weights``, with ``epoch`` and ``top1``.
BEST = "best.pth"
#: A run's summary (``results/<profile>/<task>/<run>/``), read by the tables.
METRICS = "metrics.json"
#: A pretraining run's re-evaluation of ``best.pth``, beside its metrics.
EVAL = "eval.json"
#: A run's DVCLive curves, beside its metrics.
CURVES = "dvclive"
#: A profile's complexity figures, tables and plots (``results/<profile>/``).
COMPLEXITY = "complexity.json"
TABLES = "tables.md"
PLOTS = "plots"
#: The output of stages run side by side (``runs/<profile>/logs/<stage>.log``).
LOGS = "logs"


def run_key(model: str, clusters: Sequence[int | None] | None = None, ablation: str | None = None) -> str:
    """Name of the run (and complexity key) of ``model`` with per-stage ``clusters`` and a table-6 ``ablation``.

    ``None`` as a stage's clusters means global attention, written 1. The model's own
    (released) cluster setting is the plain run: ``secvit_small``; any other setting is
    ``secvit_small-c64-16-4-1``. An ablation (a key of :data:`secvit.models.variants.ABLATIONS`)
    appends its name: ``secvit_tiny-no_lce``.
    """
    key = model
    if clusters is not None:
        normal = tuple(1 if c is None else int(c) for c in clusters)
        if normal != default_clusters(model):
            key = f"{model}-c" + "-".join(str(c) for c in normal)
    return key if ablation is None else f"{key}-{ablation}"


def downstream_key(model: str, *setting: str) -> str:
    """Run name of a detection (model, detector, schedule) or segmentation (model, head) run."""
    return "-".join((model, *setting))


def lane_task(task: str, lane: str = OURS) -> str:
    """The folder of ``task``'s runs in ``lane`` (below ``runs/<profile>/`` and ``results/<profile>/``):
    ``detection``, or ``released/detection`` in the released lane."""
    if lane not in LANES:
        raise SecvitError(f"unknown lane {lane!r}; choose one of: {', '.join(LANES)}")
    return task if lane == OURS else f"{RELEASED}/{task}"


def results_root(profile: str) -> Path:
    """A profile's results directory: ``results/<profile>``."""
    return Path("results") / profile


def task_results(root: str | Path, task: str = PRETRAIN) -> Path:
    """The runs of ``task`` inside a profile's results directory ``root``: ``<root>/<task>``."""
    return Path(root) / task


def results_dir(profile: str, run: str, task: str = PRETRAIN) -> Path:
    """Metrics and curves of a run: ``results/<profile>/<task>/<run>``."""
    return task_results(results_root(profile), task) / run


def tables_file(profile: str) -> Path:
    """A profile's paper tables: ``results/<profile>/tables.md``."""
    return results_root(profile) / TABLES


def logs_dir(profile: str) -> Path:
    """Logs of a profile's stages run side by side: ``runs/<profile>/logs``."""
    return Path("runs") / profile / LOGS


def run_dir(profile: str, run: str, task: str = PRETRAIN) -> Path:
    """Checkpoints of a run, persisted by DVC across failed or interrupted stages: ``runs/<profile>/<task>/<run>``."""
    return Path("runs") / profile / task / run


# ---- the table-7 sweep and the table-6 ablations (params.yaml `sweep`, `ablations`)


@dataclass
class SweepConfig:
    model: str
    clusters: list[str]  # e.g. "64-16-4-1": clusters of stages 1-4 (1 = global attention)

    def parsed(self) -> list[tuple[int, ...]]:
        return [parse_clusters(c) for c in self.clusters]

    def validate(self, where: str) -> None:
        for text, clusters in zip(self.clusters, self.parsed()):
            if run_key(self.model, clusters) == self.model:  # dvc.yaml names sweep runs <model>-c<clusters>
                raise SecvitError(
                    f"'{where}.clusters': {text} is {self.model}'s own setting, trained by its plain run "
                    f"(pretrain@<profile>-{self.model}); remove it from the sweep"
                )


def parse_clusters(text: str) -> tuple[int, ...]:
    """``"64-16-4-1"`` -> (64, 16, 4, 1), with a one-line error for anything else."""
    try:
        values = tuple(int(v) for v in str(text).split("-"))
    except ValueError:
        values = ()
    if len(values) != 4 or any(v < 1 for v in values):
        raise SecvitError(f"clusters must be four positive integers like 64-16-4-1, got {text!r}")
    return values


@dataclass
class AblationConfig:
    model: str  # a SecViT variant; the paper ablates secvit_tiny
    variants: list[str]  # keys of secvit.models.variants.ABLATIONS

    def validate(self, where: str) -> None:
        if self.model not in VARIANTS:
            raise SecvitError(f"'{where}.model': the ablations are options of the SecViT family; choose one of: {', '.join(VARIANTS)}")
        for name in self.variants:
            if name not in ABLATIONS:
                raise SecvitError(f"'{where}.variants': unknown ablation {name!r}; choose from: {', '.join(ABLATIONS)}")


def sweep_config(params: str | Path | dict[str, Any]) -> SweepConfig:
    """The top-level ``sweep`` section (a params file, or its contents), shared by both profiles."""
    data = params if isinstance(params, dict) else load_params(params)
    return from_section(SweepConfig, section(data, "sweep"), "sweep")


def ablation_config(params: str | Path | dict[str, Any]) -> AblationConfig:
    """The top-level ``ablations`` section (table 6; a params file, or its contents), shared by both profiles."""
    data = params if isinstance(params, dict) else load_params(params)
    return from_section(AblationConfig, section(data, "ablations"), "ablations")
