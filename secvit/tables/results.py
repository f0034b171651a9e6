"""Measured results of one profile, read from ``results/<profile>``.

Every file is optional: a missing file means "not measured", never an error.
Layout (written by other stages)::

    complexity.json                                   params and FLOPs per model / cluster setting
    pretrain/<run>/metrics.json                       ImageNet pretraining summary of one run
    pretrain/<run>/dvclive/plots/metrics/...tsv       per-epoch curves (read by plots.py)
    detection/<backbone>-<detector>-<schedule>/metrics.json
    segmentation/<backbone>-<head>/metrics.json
    released/...                                      the released-weights lane, laid out alike
                                                      (released/pretrain/<model>/metrics.json: the
                                                      authors' checkpoint evaluated here)

``<run>`` is :func:`secvit.runs.run_key`: the model name (``secvit_tiny``), for the
table-7 cluster sweep ``<model>-c<clusters joined by ->`` with the global last stage
written as 1 (``secvit_small-c64-16-4-1``; a model's released clusters (32/8/2/1) are
its plain run), for a table-6 ablation ``<model>-<variant>`` (``secvit_tiny-no_lce``).

:meth:`Results.measured` maps one row of the paper's tables onto our numbers.
Like :mod:`secvit.tables.paper` this module itself imports neither torch nor timm (its
model data comes from the plain-data :mod:`secvit.models.variants`); importing the
``secvit`` package still does, since it registers the models with timm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError
from secvit.models.variants import VARIANTS
from secvit.models.registry import available_models
from secvit.runs import COMPLEXITY, DETECTION, METRICS, PRETRAIN, RELEASED, SEGMENTATION, downstream_key, run_key, task_results

__all__ = [
    "DEFAULT_CLUSTERS",
    "IMPLEMENTED_MODELS",
    "Results",
    "load_results",
    "run_key",
]

#: Backbones this project implements (the ``ours`` keys that can have measurements): every registered model of ours.
IMPLEMENTED_MODELS: tuple[str, ...] = tuple(available_models())
#: Released cluster setting of each backbone; its run is the plain model run (see :func:`secvit.runs.run_key`).
DEFAULT_CLUSTERS: dict[str, tuple[int, ...]] = {name: variant.clusters for name, variant in VARIANTS.items()}
#: Metric keys read from detection / segmentation metrics files.
DETECTION_METRICS: tuple[str, ...] = (
    "params_m", "gflops", "ap_b", "ap50_b", "ap75_b", "ap_m", "ap50_m", "ap75_m", "ap_s_b", "ap_m_b", "ap_l_b",
)
SEGMENTATION_METRICS: tuple[str, ...] = ("params_m", "gflops", "miou")
#: Tables whose rows measure ImageNet classification at 224x224 (complexity.json + pretraining).
CLASSIFICATION_TABLES: frozenset[str] = frozenset({"table1", "table2", "table6", "table7", "table8"})


def _number(value: Any) -> float | None:
    """A finite number as float, else None (bools and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is absent. Corrupt files are user errors."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SecvitError(f"{path} is not valid JSON ({str(e).splitlines()[0][:100]}); rerun the stage that writes it") from e
    if not isinstance(data, dict):
        raise SecvitError(f"{path} holds a {type(data).__name__}, expected a JSON object; rerun the stage that writes it")
    return data


def _read_dir_metrics(root: Path) -> dict[str, dict[str, Any]]:
    """``{<subdir name>: metrics.json}`` for every ``root/*/metrics.json``, sorted by name."""
    if not root.is_dir():
        return {}
    found: dict[str, dict[str, Any]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        data = _read_json(sub / METRICS)
        if data is not None:
            found[sub.name] = data
    return found


def _complexity_rows(data: dict[str, Any] | None, path: Path) -> dict[str, dict[str, Any]]:
    """complexity.json rows keyed by their ``key`` (falling back to the run key of model + clusters)."""
    if data is None:
        return {}
    rows = data.get("rows") or []
    if not isinstance(rows, list):
        raise SecvitError(f"{path}: 'rows' must be a list; rerun the complexity stage")
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("model"), str):
            raise SecvitError(f"{path}: every row needs a 'model' name; rerun the complexity stage")
        key = row.get("key") or run_key(row["model"], row.get("clusters"))
        out[str(key)] = row
    return out


@dataclass(frozen=True)
class Results:
    """Everything measured for one profile (empty mappings where nothing was measured)."""

    root: Path
    profile: str
    complexity: dict[str, dict[str, Any]] = field(default_factory=dict)
    complexity_meta: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    detection: dict[str, dict[str, Any]] = field(default_factory=dict)
    segmentation: dict[str, dict[str, Any]] = field(default_factory=dict)
    released: Results | None = None  # the released-weights lane's results (``released/``), None when absent

    @property
    def empty(self) -> bool:
        """True when no result file of any kind was found."""
        return not (self.complexity or self.pretrain or self.detection or self.segmentation or self.released)

    def row_key(self, table_id: str, row: Mapping[str, Any]) -> str | None:
        """The run / complexity key a paper row maps to, or None for rows we do not implement."""
        ours = row.get("ours")
        if ours not in IMPLEMENTED_MODELS:
            return None
        if table_id == "table7":
            return run_key(ours, row.get("clusters"))
        return run_key(ours, ablation=row.get("variant"))  # table 6's ablations: <model>-<variant>

    def complexity_row(self, table_id: str, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The complexity.json row behind a classification-table row, if measured."""
        key = self.row_key(table_id, row)
        if key is None or table_id not in CLASSIFICATION_TABLES:
            return None
        return self.complexity.get(key)

    def gflops_all_ops(self, table_id: str, row: Mapping[str, Any]) -> float | None:
        """Our all-ops GFLOPs (attention matmuls included) for a classification-table row."""
        comp = self.complexity_row(table_id, row)
        return None if comp is None else _number(comp.get("gflops"))

    def measured(
        self, table_id: str, section_setting: Mapping[str, Any] | None, row: Mapping[str, Any]
    ) -> dict[str, float | None]:
        """Our measured values for one paper row, keyed by metric (``{}`` when the row is not ours).

        GFLOPs of classification rows follow the paper's convention (``gflops_no_attn``);
        see :meth:`gflops_all_ops` for the all-ops count.
        """
        key = self.row_key(table_id, row)
        if key is None:
            return {}
        setting = dict(section_setting or {})
        if table_id in CLASSIFICATION_TABLES:
            return self._classification(key)
        if "detector" in setting:
            name = downstream_key(key, setting["detector"], setting["schedule"])
            return self._pick(self.detection.get(name), DETECTION_METRICS)
        if "head" in setting:
            return self._pick(self.segmentation.get(downstream_key(key, setting["head"])), SEGMENTATION_METRICS)
        return {}

    def unlisted(self, section_setting: Mapping[str, Any] | None, listed: Sequence[str]) -> list[tuple[str, dict[str, float | None]]]:
        """Measured detection / segmentation runs of a section's setting whose backbone is not in ``listed``.

        The paper reports each setting for a few backbones; runs of others (the smoke profile's
        ``secvit_tiny``, peers) are shown as extra rows rather than dropped.
        """
        setting = dict(section_setting or {})
        if "detector" in setting:
            runs, suffix, keys = self.detection, downstream_key("", setting["detector"], setting["schedule"]), DETECTION_METRICS
        elif "head" in setting:
            runs, suffix, keys = self.segmentation, downstream_key("", setting["head"]), SEGMENTATION_METRICS
        else:
            return []
        return [
            (name.removesuffix(suffix), self._pick(data, keys))
            for name, data in runs.items()
            if name.endswith(suffix) and name.removesuffix(suffix) not in listed
        ]

    def unlisted_classification(self, listed: Sequence[str]) -> list[tuple[str, dict[str, float | None]]]:
        """Measured ImageNet runs of registered models (pretraining metrics or a complexity row) whose
        model no row of ``listed`` shows: the peers (STViT, PaCa-ViT), trained with the same recipe."""
        keys = [k for k in IMPLEMENTED_MODELS if k not in listed and (k in self.pretrain or k in self.complexity)]
        return [(k, self._classification(k)) for k in keys]

    def _classification(self, key: str) -> dict[str, float | None]:
        comp = self.complexity.get(key) or {}
        params = _number(comp.get("params"))
        top1 = _number((self.pretrain.get(key) or {}).get("best_top1"))
        return {
            "params_m": None if params is None else params / 1e6,
            "gflops": _number(comp.get("gflops_no_attn")),
            "throughput": _number(comp.get("throughput")),
            "top1": top1,
        }

    @staticmethod
    def _pick(data: Mapping[str, Any] | None, keys: Sequence[str]) -> dict[str, float | None]:
        data = data or {}
        return {k: _number(data.get(k)) for k in keys}


def load_results(results_dir: str | Path, profile: str | None = None) -> Results:
    """Read every result file under ``results_dir`` (a missing directory gives empty results).

    ``profile`` defaults to the directory's name (``results/smoke`` -> ``smoke``).
    """
    root = Path(results_dir)
    comp_path = root / COMPLEXITY
    comp = _read_json(comp_path)
    meta = {k: v for k, v in (comp or {}).items() if k != "rows"}
    return Results(
        root=root,
        profile=profile or root.resolve().name,
        complexity=_complexity_rows(comp, comp_path),
        complexity_meta=meta,
        pretrain=_read_dir_metrics(task_results(root, PRETRAIN)),
        detection=_read_dir_metrics(task_results(root, DETECTION)),
        segmentation=_read_dir_metrics(task_results(root, SEGMENTATION)),
        released=load_results(root / RELEASED, profile or root.resolve().name) if (root / RELEASED).is_dir() else None,
    )
