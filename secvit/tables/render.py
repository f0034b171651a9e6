"""``results/<profile>/tables.md``: the paper's tables 1-8 next to our measurements.

Rows of our models show ``paper / ours (ours - paper)`` in every metric cell, or
``paper / –`` where nothing was measured; competitors' rows show the paper's
figures only. Table 8 takes the architecture of the SecViT rows from the model
registry. The output has no date or absolute path, so unchanged inputs give a
byte-identical file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from secvit.atomic import write_text
from secvit.tables.paper import PaperTable, Section, load_paper_tables
from secvit.runs import DETECTION, SEGMENTATION, TABLES, downstream_key, run_key
from secvit.tables.results import CLASSIFICATION_TABLES, IMPLEMENTED_MODELS, Results, load_results

__all__ = ["render_tables", "write_tables", "compare_cell", "format_number"]

DASH = "–"
ALL_OPS_COLUMN = "GFLOPs all ops (ours)"
RELEASED_COLUMN = "Top-1 (%) released, evaluated here"
RELEASED_ROW = "released backbone"
SMOKE_WARNING = (
    "> **WARNING: smoke profile. These numbers come from tiny generated data and tiny runs; "
    "they check that the pipeline works and are NOT comparable to the paper.**"
)
COLUMN_TITLES: dict[str, str] = {
    "params_m": "Params (M)", "gflops": "GFLOPs", "throughput": "Throughput (img/s)", "top1": "Top-1 (%)",
    "ap_b": "AP^b", "ap50_b": "AP^b_50", "ap75_b": "AP^b_75",
    "ap_m": "AP^m", "ap50_m": "AP^m_50", "ap75_m": "AP^m_75",
    "ap_s_b": "AP^b_S", "ap_m_b": "AP^b_M", "ap_l_b": "AP^b_L", "miou": "mIoU (%)",
    "clusters": "Clusters per stage", "blocks": "Blocks", "channels": "Channels", "heads": "Heads",
    "ratios": "MLP ratio",
}
#: Decimals of our measured figures (and of the differences); 2 for everything not listed.
DECIMALS: dict[str, int] = {"throughput": 0}
STRUCTURE_COLUMNS: frozenset[str] = frozenset({"clusters", "blocks", "channels", "heads", "ratios"})
_CLASSIFICATION_SOURCE = (
    "Ours: params and GFLOPs from `complexity.json`; top-1 is `best_top1` of `pretrain/<model>/metrics.json` "
    "(best epoch, better of raw and EMA weights, as the paper reports). Trained with the release's recipe "
    "(README, \"The ImageNet recipe\"): global batch 2048 where the paper's text says 1024; bf16 autocast with "
    "SECA's clustering scores in fp32 where the release used fp16."
)
_DETECTION_SOURCE = (
    "Ours: `detection/<backbone>-<detector>-<schedule>/metrics.json`: COCO val2017 AP (pycocotools); params and "
    "GFLOPs of the whole detector at 1280x800 (fvcore, one multiply-add = one FLOP, without the attention matmuls "
    "as the paper's convention; all ops in `gflops_all_ops`)."
)
#: Where our numbers of each table come from.
SOURCES: dict[str, str] = {
    "table1": _CLASSIFICATION_SOURCE,
    "table2": (
        "Ours: params and GFLOPs of `sec_swin_*` / `sec_fastervit_*` from `complexity.json`, top-1 from their "
        "pretraining runs where the profile has them; baselines show the paper's figures."
    ),
    "table3": _DETECTION_SOURCE,
    "table4": _DETECTION_SOURCE,
    "table5": (
        "Ours: `segmentation/<backbone>-<head>/metrics.json`: single-scale ADE20K val mIoU (mmseg; multi-scale + "
        "flip in `miou_ms_flip` when measured); params and GFLOPs of the whole segmentor at 512x2048 (SecViT-T at "
        "512x512, as the paper), same FLOP convention as tables 3-4."
    ),
    "table6": (
        "Ours: each ablation of SecViT-T is run `pretrain/secvit_tiny-<variant>` (params.yaml `ablations`) and the "
        "complexity row with the same key; SecViT-T and SEC-Swin-T as in tables 1 and 2. The Swin-T baseline is "
        "not ours. `no_conv_stem` replaces the stem by a 4x4 patch embedding and the strided convs between stages "
        "by 2x2 patch merging (the reading that gives the paper's 14M and 2.1G)."
    ),
    "table7": (
        "Ours: run `pretrain/secvit_small-c<clusters>` and the complexity row with the same key (global last stage "
        "written as 1); the released 32/8/2/global setting is the plain `secvit_small` run."
    ),
    "table8": (
        "Ours: blocks, channels, heads and MLP ratio from the model registry (`secvit.models.secvit.VARIANTS`; "
        "a disagreement with the paper would read `paper / ours`); params and GFLOPs from `complexity.json`. "
        "SEC-Swin and SEC-FasterViT: params and GFLOPs only."
    ),
}


# ---------------------------------------------------------------------------
# Cells


def format_paper(value: Any) -> str:
    """A paper figure exactly as printed (ints stay ints), ``–`` for an empty cell."""
    if value is None:
        return DASH
    if isinstance(value, list):
        return format_list(value)
    return str(value)


def format_list(values: Sequence[int | None], null: str = DASH) -> str:
    """Per-stage values as ``2, 2, 9, 2`` (``null`` for None entries)."""
    return ", ".join(null if v is None else str(v) for v in values)


def format_number(metric: str, value: float | None) -> str:
    """One of our measured figures, rounded for its metric; ``–`` for None."""
    if value is None:
        return DASH
    decimals = DECIMALS.get(metric, 2)
    text = f"{value:.{decimals}f}"
    return "0" if decimals == 0 and text == "-0" else text


def format_diff(metric: str, ours: float, paper: float) -> str:
    """Signed difference ours - paper, computed from our figure as displayed."""
    decimals = DECIMALS.get(metric, 2)
    diff = round(round(ours, decimals) - paper, decimals)
    text = f"{diff:+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text


def compare_cell(metric: str, paper: Any, ours: float | None) -> str:
    """``paper / ours (diff)``; ``paper / –`` when we measured nothing; ``– / ours`` when the paper is empty."""
    shown = format_paper(paper)
    if ours is None:
        return f"{shown} / {DASH}"
    if paper is None:
        return f"{DASH} / {format_number(metric, ours)}"
    return f"{shown} / {format_number(metric, ours)} ({format_diff(metric, ours, float(paper))})"


def model_cell(row: Mapping[str, Any]) -> str:
    """Model name as printed, with the paper's reference number; our models in bold."""
    name = f"{row['model']} [{row['cite']}]" if "cite" in row else str(row["model"])
    if "ours" not in row:
        return name
    return f"**{name}**" if row["ours"] in IMPLEMENTED_MODELS else f"**{name}** (not implemented)"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A padded markdown table (left-aligned first column, right-aligned numbers)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join([":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return [line(header), rule, *(line(r) for r in rows)]


# ---------------------------------------------------------------------------
# Table 8: architectures from the registry


def registry_architecture(model: str) -> dict[str, Any]:
    """Blocks, channels, heads and MLP ratio of one SecViT variant, from the registry ({} for other families)."""
    import inspect

    from secvit.models.secvit import VARIANTS, ConvFFN

    variant = VARIANTS.get(model)
    if variant is None:
        return {}
    ratio = inspect.signature(ConvFFN).parameters["ratio"].default
    return {
        "blocks": list(variant.depths), "channels": list(variant.widths),
        "heads": list(variant.heads), "ratios": ratio,
    }


def architecture_measured(results: Results, row: Mapping[str, Any]) -> dict[str, Any]:
    """Registry structure plus params and GFLOPs (complexity.json: rendering measures nothing) for a table-8 row of ours."""
    ours = row.get("ours")
    if ours not in IMPLEMENTED_MODELS:
        return {}
    values: dict[str, Any] = dict(registry_architecture(ours))
    values.update(results.measured("table8", {}, row))
    return values


def structure_cell(paper: Any, ours: Any) -> str:
    """The paper's structure value, or ``paper / ours`` if the registry disagrees."""
    if ours is None or ours == paper:
        return format_paper(paper)
    return f"{format_paper(paper)} / {format_paper(ours)}"


# ---------------------------------------------------------------------------
# Tables


def has_all_ops_column(table: PaperTable, section: Section) -> bool:
    """Sections at 224x224 ImageNet with a model we implement get a column with our all-ops GFLOPs."""
    implemented = any(row.get("ours") in IMPLEMENTED_MODELS for row in section.rows)
    return table.id in CLASSIFICATION_TABLES and "gflops" in section.columns and implemented


def row_cells(table: PaperTable, section: Section, row: Mapping[str, Any], results: Results) -> list[str]:
    """Markdown cells of one paper row."""
    is_ours = "ours" in row
    if table.id == "table8":
        measured = architecture_measured(results, row)
    else:
        measured = results.measured(table.id, section.setting, row) if is_ours else {}
    cells = [model_cell(row)]
    for col in section.columns:
        if col in STRUCTURE_COLUMNS:
            cell = structure_cell(row[col], measured.get(col)) if col != "clusters" else format_clusters(row[col])
        elif is_ours:
            cell = compare_cell(col, row[col], measured.get(col))
        else:
            cell = format_paper(row[col])
        cells.append(cell)
    if has_all_ops_column(table, section):
        cells.append(format_number("gflops", results.gflops_all_ops(table.id, row)) if is_ours else "")
    return cells


def format_clusters(clusters: Sequence[int | None]) -> str:
    """Clusters per stage as ``64, 16, 4, global``."""
    return format_list(clusters, null="global")


def section_heading(section: Section) -> str:
    """``### <name> (detector: mask_rcnn, schedule: 3x_ms)``."""
    if not section.setting:
        return f"### {section.name}"
    setting = ", ".join(f"{k}: {v}" for k, v in section.setting.items())
    return f"### {section.name} ({setting})"


def notes(section: Section) -> list[str]:
    """The paper rows' notes, rows sharing a note grouped."""
    grouped: dict[str, list[str]] = {}
    for row in section.rows:
        if "note" in row:
            grouped.setdefault(row["note"], []).append(str(row["model"]))
    return [f"- {', '.join(models)}: {note}" for note, models in grouped.items()]


def render_section(table: PaperTable, section: Section, results: Results) -> list[str]:
    """Heading, markdown table and notes of one section."""
    header = ["Model", *(COLUMN_TITLES[c] for c in section.columns)]
    if has_all_ops_column(table, section):
        header.append(ALL_OPS_COLUMN)
    released = results.released
    top1_released = table.id == "table1" and released is not None and "top1" in section.columns and bool(released.pretrain)
    if top1_released:
        header.append(RELEASED_COLUMN)
    rows = []
    for row in section.rows:
        cells = row_cells(table, section, row, results)
        if top1_released:
            key = results.row_key(table.id, row) if "ours" in row else None
            value = (released.pretrain.get(key) or {}).get("best_top1") if key else None
            cells.append(compare_cell("top1", row["top1"], value) if key and value is not None else "")
        rows.append(cells)
        if released is not None and "ours" in row and table.id not in CLASSIFICATION_TABLES:  # tables 3-5: the released lane's row
            measured = released.measured(table.id, section.setting, row)
            if any(v is not None for v in measured.values()):
                rows.append([f"{model_cell(row)} ({RELEASED_ROW})", *(compare_cell(c, row[c], measured.get(c)) for c in section.columns)])
    listed = [row["ours"] for row in section.rows if "ours" in row]
    for model, measured in results.unlisted(section.setting, listed):
        rows.append([f"`{model}` (ours, not in the paper)", *(compare_cell(c, None, measured.get(c)) for c in section.columns)])
    if released is not None:
        for model, measured in released.unlisted(section.setting, listed):
            rows.append([f"`{model}` ({RELEASED_ROW}, not in the paper)", *(compare_cell(c, None, measured.get(c)) for c in section.columns)])
    width = len(header)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = [section_heading(section), "", *markdown_table(header, rows)]
    if table.id == "table7":
        keys = [f"`{run_key(r['ours'], r['clusters'])}`" for r in section.rows if "ours" in r]
        lines += ["", f"Our runs, in row order: {', '.join(keys)}."]
    extra = notes(section)
    return lines + (["", "Notes:", *extra] if extra else [])


def render_table(table: PaperTable, results: Results) -> list[str]:
    """Title, FLOPs note, sources and every section of one table."""
    number = table.id.removeprefix("table")
    note = table.flops_note if table.flops_note.endswith(".") else table.flops_note + "."
    lines = [f"## Table {number}: {table.title}", "", f"Paper: {note}", ""]
    if table.id in SOURCES:
        lines += [SOURCES[table.id], ""]
    for section in table.sections:
        lines += render_section(table, section, results) + [""]
    if table.id == "table1":
        lines += peers_section(tables_listing(table), results)
    return lines


def tables_listing(table: PaperTable) -> list[str]:
    """Our models that some row of ``table`` shows."""
    return [row["ours"] for section in table.sections for row in section.rows if "ours" in row]


def peers_section(listed: Sequence[str], results: Results) -> list[str]:
    """Table 1's extra section: measured models that the paper's table 1 does not list (the SEC variants and
    the peers STViT and PaCa-ViT, pretrained with the same recipe), ours only."""
    found = results.unlisted_classification(listed)
    if not found:
        return []
    columns = ["params_m", "gflops", "top1"]
    header = ["Model", *(COLUMN_TITLES[c] for c in columns), ALL_OPS_COLUMN]
    rows = [
        [f"`{model}` (ours, not in the paper's table 1)", *(compare_cell(c, None, m.get(c)) for c in columns),
         format_number("gflops", results.gflops_all_ops("table1", {"ours": model}))]
        for model, m in found
    ]
    return ["### Same recipe, not in the paper's table 1 (SEC variants, STViT, PaCa-ViT)", "", *markdown_table(header, rows), ""]


def header(results: Results, profile: str) -> list[str]:
    """Title, profile, cell legend and FLOP conventions."""
    lines = ["# SecViT reproduction: the paper's tables against our measurements", ""]
    lines += [f"Profile: `{profile}`. Our numbers come from that profile's results directory.", ""]
    if profile == "smoke":
        lines += [SMOKE_WARNING, ""]
    lines += [
        "Cells of our models read `paper / ours (ours - paper)`; `paper / –` means we measured nothing for it. "
        "Competitors' rows show the paper's figures only. `–` alone is a cell the paper leaves empty. "
        "Our figures: params in millions and GFLOPs with 2 decimals, accuracies in % with 2 decimals.",
        "",
        "Lanes: every measured figure comes from our pretraining (the `ours` lane: `results/<profile>/`) unless it is "
        f"labelled released: table 1's `{RELEASED_COLUMN}` column is the authors' released checkpoint evaluated on this "
        f"profile's ImageNet (`released/pretrain/<model>/metrics.json`, better of raw and EMA), and rows marked "
        f"`({RELEASED_ROW})` in tables 3-5 are dense runs started from it (`released/<task>/<run>/metrics.json`).",
        "",
        "FLOP conventions:",
        "",
        "- `GFLOPs` (tables 1, 2, 6, 7, 8): the paper's convention. For SecViT the paper's figures match fvcore at "
        "224x224 (one multiply-add = one FLOP) *without* the in-cluster attention matmuls QK^T and AV; our figure "
        "in that column is the same count (`gflops_no_attn`).",
        f"- `{ALL_OPS_COLUMN}`: our fvcore count with every op, attention matmuls included (`gflops`).",
        "- Detection and segmentation GFLOPs: whole detector / segmentor, as printed and as written by those stages.",
    ]
    convention = results.complexity_meta.get("flop_convention")
    if convention:
        size = results.complexity_meta.get("img_size")
        at = f" at {size}x{size}" if size else ""
        lines.append(f"- `complexity.json`{at}: {convention}.")
    return lines + [""]


def runs_section(results: Results, tables: Mapping[str, PaperTable]) -> list[str]:
    """Every measured pretraining run and complexity row, as found."""
    lines = ["## Measured runs", ""]
    if results.pretrain:
        head = ["Run", "Epochs", "Best top-1", "Best epoch", "Weights", "Final top-1", "Final top-1 EMA",
                "Train loss", "Train img/s", "Global batch", "Classes"]
        rows = [_run_row(name, m) for name, m in results.pretrain.items()]
        lines += ["### ImageNet pretraining (`pretrain/<run>/metrics.json`)", "", *markdown_table(head, rows), ""]
    else:
        lines += ["No pretraining results found.", ""]
    if results.complexity:
        head = ["Key", "Clusters", "Params (M)", "GFLOPs (paper conv.)", ALL_OPS_COLUMN, "Throughput (img/s)", "Device"]
        rows = [_complexity_row(key, c) for key, c in results.complexity.items()]
        lines += ["### Complexity (`complexity.json`)", "", *markdown_table(head, rows), ""]
    else:
        lines += ["No complexity results found.", ""]
    unused = _unmatched_downstream(results, tables)
    if unused:
        lines += ["Downstream results that match no paper row: " + ", ".join(f"`{u}`" for u in unused) + ".", ""]
    return lines


def _fmt_any(value: Any, decimals: int = 2) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{decimals}f}"


def _run_row(name: str, m: Mapping[str, Any]) -> list[str]:
    batch = _fmt_any(m.get("global_batch"))
    if m.get("world_size") is not None or m.get("accumulation") is not None:
        batch += f" ({_fmt_any(m.get('world_size'))} proc x {_fmt_any(m.get('accumulation'))} accum)"
    return [
        f"`{name}`", _fmt_any(m.get("epochs")), _fmt_any(m.get("best_top1")), _fmt_any(m.get("best_epoch")),
        _fmt_any(m.get("best_weights")), _fmt_any(m.get("final_top1")), _fmt_any(m.get("final_top1_ema")),
        _fmt_any(m.get("train_loss"), 4), _fmt_any(m.get("train_images_per_s"), 1), batch,
        _fmt_any(m.get("num_classes")),
    ]


def _complexity_row(key: str, c: Mapping[str, Any]) -> list[str]:
    clusters = c.get("clusters")
    params = c.get("params")
    return [
        f"`{key}`", format_list(clusters) if isinstance(clusters, list) else DASH,
        DASH if params is None else f"{params / 1e6:.2f}", _fmt_any(c.get("gflops_no_attn")),
        _fmt_any(c.get("gflops")), _fmt_any(c.get("throughput"), 0), _fmt_any(c.get("throughput_device")),
    ]


def _unmatched_downstream(results: Results, tables: Mapping[str, PaperTable]) -> list[str]:
    """Detection / segmentation result names that no table section shows."""
    suffixes: set[tuple[str, str]] = set()
    for table in tables.values():
        for section in table.sections:
            s = section.setting
            if "detector" in s:
                suffixes.add((DETECTION, downstream_key("", s["detector"], s["schedule"])))
            elif "head" in s:
                suffixes.add((SEGMENTATION, downstream_key("", s["head"])))
    found = [(DETECTION, k) for k in results.detection] + [(SEGMENTATION, k) for k in results.segmentation]
    return sorted(f"{task}/{k}" for task, k in found if not any(t == task and k.endswith(x) for t, x in suffixes))


def render_tables(results: Results, profile: str, tables: Mapping[str, PaperTable] | None = None) -> str:
    """The whole markdown document."""
    tables = load_paper_tables() if tables is None else tables
    lines = header(results, profile)
    for table_id in sorted(tables, key=lambda t: int(t.removeprefix("table"))):
        lines += render_table(tables[table_id], results)
    lines += runs_section(results, tables)
    return "\n".join(_strip_trailing(lines)).rstrip("\n") + "\n"


def _strip_trailing(lines: Iterable[str]) -> Iterable[str]:
    return (line.rstrip() for line in lines)


def write_tables(results_dir: str | Path, profile: str, out_path: str | Path | None = None) -> str:
    """Render the tables for ``results_dir`` and write them to ``out_path`` (default ``<results_dir>/tables.md``)."""
    results = load_results(results_dir, profile)
    text = render_tables(results, profile)
    write_text(Path(out_path) if out_path is not None else Path(results_dir) / TABLES, text)
    return text
