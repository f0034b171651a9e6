"""Names and places of a profile's runs, defined once for the stages, the command line and the tables.

Layout, relative to the project directory (``dvc.yaml`` spells the same paths out literally)::

    runs/<profile>/<task>/<run>/       checkpoints (last.pth, best.pth), the skip log
    results/<profile>/                 complexity.json, tables.md, plots/
    results/<profile>/<task>/<run>/    metrics.json, eval.json, dvclive/

``<task>`` is ``pretrain`` for ImageNet pretraining, ``detection`` and ``segmentation`` for the
dense tasks (run names from :func:`downstream_key`). ``<run>`` is :func:`run_key`: the model
name, for the table-7 sweep ``<model>-c<clusters joined by ->``, for a table-6 ablation
``<model>-<ablation>`` (``secvit_tiny-no_lce``). This module itself
imports neither torch nor timm (importing the ``secvit`` package still does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from secvit.models.variants import default_clusters

__all__ = [
    "BEST", "COMPLEXITY", "CURVES", "DETECTION", "EVAL", "LAST", "LOGS", "METRICS", "PLOTS", "PRETRAIN", "SEGMENTATION",
    "TABLES", "downstream_key", "logs_dir", "results_dir", "results_root", "run_dir", "run_key", "task_results", "tables_file",
]

#: The task name of ImageNet pretraining runs.
PRETRAIN = "pretrain"
#: The task names of the dense-prediction runs.
DETECTION = "detection"
SEGMENTATION = "segmentation"
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
