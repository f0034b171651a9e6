"""The SecViT paper's tables 1-8 (arXiv 2405.13337) as typed Python objects.

The numbers live in ``paper_results.yaml`` next to this module, transcribed
exactly as printed. :func:`load_paper_tables` reads and validates that file;
:func:`paper_value` looks up one printed number for one of our models::

    >>> paper_value("table1", "secvit_small", "top1")
    84.2
    >>> paper_value("table3", "secvit_base", "ap_b", {"detector": "cascade_mask_rcnn"})
    55.1

This module depends only on the standard library and PyYAML, so it can be
imported (or loaded from its file path) without torch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "COLUMN_KEYS",
    "METRIC_KEYS",
    "OUR_MODELS",
    "PAPER_TABLES_PATH",
    "PaperTable",
    "Section",
    "load_paper_tables",
    "paper_value",
]

PAPER_TABLES_PATH: Path = Path(__file__).with_name("paper_results.yaml")

#: Numeric result columns (see the header of paper_results.yaml).
METRIC_KEYS: frozenset[str] = frozenset({
    "params_m", "gflops", "throughput", "top1",
    "ap_b", "ap50_b", "ap75_b", "ap_m", "ap50_m", "ap75_m",
    "ap_s_b", "ap_m_b", "ap_l_b", "miou",
})
#: Per-stage list columns (tables 7 and 8) and the MLP ratio (table 8).
LIST_KEYS: frozenset[str] = frozenset({"clusters", "blocks", "channels", "heads"})
STRUCTURE_KEYS: frozenset[str] = LIST_KEYS | {"ratios"}
#: Every key allowed in a section's ``columns``.
COLUMN_KEYS: frozenset[str] = METRIC_KEYS | STRUCTURE_KEYS
#: Row keys that describe the row rather than hold a printed value.
ROW_META_KEYS: frozenset[str] = frozenset({"model", "cite", "ours", "variant", "note"})
#: Registry keys of the paper's own models (values of ``ours``).
OUR_MODELS: tuple[str, ...] = (
    "secvit_tiny", "secvit_small", "secvit_base", "secvit_large",
    "sec_swin_tiny", "sec_swin_small", "sec_fastervit_0", "sec_fastervit_1",
)
TASKS: frozenset[str] = frozenset(
    {"classification", "detection", "segmentation", "ablation", "clusters", "architecture"}
)

Value = int | float | list[int | None] | None


@dataclass(frozen=True)
class Section:
    """One block of a table that shares a setting and a column list.

    ``rows`` are plain dicts: ``model`` plus optional ``cite``/``ours``/
    ``variant``/``note``, and one entry per name in ``columns`` (``None``
    where the paper's cell is empty).
    """

    name: str
    setting: dict[str, Any]
    columns: list[str]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables (``table1`` ... ``table8``)."""

    id: str
    title: str
    task: str
    flops_note: str
    sections: list[Section]

    def iter_rows(self) -> Iterator[tuple[Section, dict[str, Any]]]:
        """Yield ``(section, row)`` for every row, in paper order."""
        for section in self.sections:
            for row in section.rows:
                yield section, row

    @property
    def n_rows(self) -> int:
        """Total number of rows over all sections."""
        return sum(len(s.rows) for s in self.sections)


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_value(where: str, key: str, value: Any) -> None:
    if value is None:
        return
    if key in LIST_KEYS:
        if not isinstance(value, list) or not all(
            x is None or (isinstance(x, int) and not isinstance(x, bool)) for x in value
        ):
            raise _fail(where, f"{key!r} must be a list of integers or null, got {value!r}")
    elif not _is_number(value):
        raise _fail(where, f"{key!r} must be a number or null, got {value!r}")


def _parse_row(where: str, columns: list[str], raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, f"row must be a mapping, got {raw!r}")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(where, "row has no 'model' name")
    where = f"{where}, row {model!r}"
    for key, value in raw.items():
        if key in ROW_META_KEYS:
            if key == "ours" and value not in OUR_MODELS:
                raise _fail(where, f"unknown 'ours' key {value!r} (expected one of {OUR_MODELS})")
            if key == "cite" and not (isinstance(value, int) and not isinstance(value, bool)):
                raise _fail(where, f"'cite' must be an integer, got {value!r}")
            if key in ("variant", "note") and not isinstance(value, str):
                raise _fail(where, f"{key!r} must be a string, got {value!r}")
        elif key in COLUMN_KEYS:
            if key not in columns:
                raise _fail(where, f"value for column {key!r} which is not in the section's columns {columns}")
            _check_value(where, key, value)
        else:
            raise _fail(where, f"unknown metric key {key!r}")
    missing = [c for c in columns if c not in raw]
    if missing:
        raise _fail(where, f"missing cells {missing} (use null for cells the paper leaves empty)")
    return dict(raw)


def _parse_section(where: str, raw: Any) -> Section:
    if not isinstance(raw, dict):
        raise _fail(where, f"section must be a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str):
        raise _fail(where, "section has no 'name'")
    where = f"{where}, section {name!r}"
    unknown = set(raw) - {"name", "setting", "columns", "rows"}
    if unknown:
        raise _fail(where, f"unknown section keys {sorted(unknown)}")
    setting = raw.get("setting") or {}
    if not isinstance(setting, dict):
        raise _fail(where, f"'setting' must be a mapping, got {setting!r}")
    columns = raw.get("columns")
    if not isinstance(columns, list) or not columns:
        raise _fail(where, "'columns' must be a non-empty list")
    for col in columns:
        if col not in COLUMN_KEYS:
            raise _fail(where, f"unknown metric key {col!r} in columns")
    if len(set(columns)) != len(columns):
        raise _fail(where, f"duplicate columns {columns}")
    rows = raw.get("rows")
    if not isinstance(rows, list) or not rows:
        raise _fail(where, "'rows' must be a non-empty list")
    return Section(
        name=name,
        setting=dict(setting),
        columns=list(columns),
        rows=[_parse_row(where, columns, r) for r in rows],
    )


def _parse_table(raw: Any) -> PaperTable:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise ValueError(f"table entry without an 'id': {raw!r:.80}")
    where = raw["id"]
    for key in ("title", "task", "flops_note", "sections"):
        if key not in raw:
            raise _fail(where, f"missing {key!r}")
    unknown = set(raw) - {"id", "title", "task", "flops_note", "sections"}
    if unknown:
        raise _fail(where, f"unknown table keys {sorted(unknown)}")
    if raw["task"] not in TASKS:
        raise _fail(where, f"unknown task {raw['task']!r} (expected one of {sorted(TASKS)})")
    if not isinstance(raw["sections"], list) or not raw["sections"]:
        raise _fail(where, "'sections' must be a non-empty list")
    return PaperTable(
        id=raw["id"],
        title=str(raw["title"]),
        task=raw["task"],
        flops_note=str(raw["flops_note"]),
        sections=[_parse_section(where, s) for s in raw["sections"]],
    )


def load_paper_tables(path: str | Path | None = None) -> dict[str, PaperTable]:
    """Read and validate the paper's tables, keyed by table id.

    ``path`` defaults to ``paper_results.yaml`` beside this module. Raises
    ``ValueError`` (naming the table and row) on an unknown metric key, a
    value for a column not listed in its section's ``columns``, a missing
    cell, a bad ``ours`` key or a malformed entry.
    """
    path = PAPER_TABLES_PATH if path is None else Path(path)
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("tables"), list):
        raise ValueError(f"{path}: expected a mapping with a 'tables' list")
    tables: dict[str, PaperTable] = {}
    for raw in data["tables"]:
        table = _parse_table(raw)
        if table.id in tables:
            raise ValueError(f"{path}: duplicate table id {table.id!r}")
        tables[table.id] = table
    return tables


@functools.lru_cache(maxsize=1)
def _default_tables() -> dict[str, PaperTable]:
    return load_paper_tables()


def paper_value(
    table_id: str,
    ours: str,
    metric: str,
    setting: Mapping[str, Any] | None = None,
    *,
    where: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> Value:
    """The paper's printed ``metric`` for our model ``ours`` in ``table_id``.

    ``setting`` selects sections whose setting contains those items (e.g.
    ``{"detector": "retinanet"}`` in table 4, ``{"head": "upernet"}`` in
    table 5); ``where`` selects rows with those values (e.g.
    ``{"clusters": [64, 16, 4, None]}`` in table 7; ``{"variant": "no_lce"}`` for
    an ablation in table 6, whose rows count only when asked for). Returns ``None`` when no
    row matches or the paper's cell is empty; raises ``ValueError`` if the
    matching rows disagree (pass ``setting``/``where`` to narrow them down),
    ``KeyError`` for an unknown table id.
    """
    if metric not in COLUMN_KEYS:
        raise ValueError(f"unknown metric key {metric!r} (expected one of {sorted(COLUMN_KEYS)})")
    if ours not in OUR_MODELS:
        raise ValueError(f"unknown model key {ours!r} (expected one of {OUR_MODELS})")
    tables = _default_tables() if path is None else load_paper_tables(path)
    if table_id not in tables:
        raise KeyError(f"no table {table_id!r}; have {sorted(tables)}")
    setting = dict(setting or {})
    where = dict(where or {})
    found: list[tuple[Section, dict[str, Any]]] = []
    for section, row in tables[table_id].iter_rows():
        if metric not in section.columns or row.get("ours") != ours:
            continue
        if row.get("variant") != where.get("variant"):  # an ablation is another model: only when asked for
            continue
        if any(section.setting.get(k) != v for k, v in setting.items()):
            continue
        if any(row.get(k) != v for k, v in where.items()):
            continue
        found.append((section, row))
    values = [row[metric] for _, row in found]
    if not values:
        return None
    if any(v != values[0] for v in values[1:]):
        choices = "; ".join(
            f"section {s.name!r} setting {s.setting} -> {r[metric]!r}" for s, r in found
        )
        raise ValueError(
            f"{table_id}: {len(found)} rows for {ours!r} give different {metric!r} values "
            f"({choices}); pass setting= or where= to choose one"
        )
    return values[0]
