"""Checks the transcription of the SecViT paper's tables 1-8.

Every YAML row is turned back into the text the paper prints (model name,
reference, numbers in column order, with the paper's precision) and compared
with the verbatim table lines in tests/data/secvit-paper-tables.txt.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXCERPT = Path(__file__).resolve().parent / "data" / "secvit-paper-tables.txt"
PAPER_TEXT = REPO / ".." / "shared" / "seeds" / "secvit-paper.txt"
PAPER_MODULE = REPO / "secvit" / "tables" / "paper.py"


def _load_paper_module() -> ModuleType:
    """Import secvit.tables.paper; fall back to its file if `import secvit` fails.

    The package __init__ pulls in the model code (torch, timm), which may be
    missing or half-written; the loader itself needs only PyYAML.
    """
    try:
        from secvit.tables import paper as module

        return module
    except Exception:  # noqa: BLE001 - any failure of the package import
        name = "_secvit_tables_paper_standalone"
        spec = importlib.util.spec_from_file_location(name, PAPER_MODULE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module


paper = _load_paper_module()

# Rows per section, counted from the paper.
EXPECTED_SECTION_ROWS: dict[str, list[int]] = {
    "table1": [14, 16, 15, 15],
    "table2": [4, 4],
    "table3": [15, 15],
    "table4": [22, 16],  # Mask R-CNN 1x: all 22 printed rows; RetinaNet 1x: 16 of them
    "table5": [18, 18],
    "table6": [7],
    "table7": [4],
    "table8": [8],
}
EXPECTED_TASKS = {
    "table1": "classification", "table2": "classification", "table3": "detection",
    "table4": "detection", "table5": "segmentation", "table6": "ablation",
    "table7": "clusters", "table8": "architecture",
}
OURS_BY_NAME = {
    "SecViT-T": "secvit_tiny", "SecViT-S": "secvit_small", "SecViT-B": "secvit_base",
    "SecViT-L": "secvit_large", "SEC-Swin-T": "sec_swin_tiny", "SEC-Swin-S": "sec_swin_small",
    "SEC-FasterViT-0": "sec_fastervit_0", "SEC-FasterViT-1": "sec_fastervit_1",
}
#: Table 6's ablations of SecViT-T: printed name -> variant key.
ABLATED = {"SECA→CSWSA": "seca_to_cswsa", "w/o LCE": "no_lce", "w/o CPE": "no_cpe", "w/o Conv Stem": "no_conv_stem"}
NBSP = "\u00a0"  # the paper's text puts a no-break space before "[cite]"
DELTA = re.compile(r"\([+-]\d+(?:\.\d+)?\)")  # "83.6(+2.3)" -> top1 83.6


# --------------------------------------------------------------------------- helpers


def fmt(value: Any, *, brackets: bool = True) -> str:
    """A cell as the paper prints it: 4.4, 70.0, 13, [2, 2, 9, 2], "–" for empty."""
    if value is None:
        return "–"
    if isinstance(value, list):
        inner = ", ".join(fmt(v) for v in value)
        return f"[{inner}]" if brackets else inner
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    return str(value)


def row_label(section: Any, row: dict[str, Any]) -> tuple[str, re.Pattern[str]]:
    """(key, regex) locating the printed start of a row on a table line.

    Table 7 prints no model name; its rows start with the cluster numbers.
    A "→" in a model name stands for the paper's garbled arrow markup.
    """
    if "clusters" in section.columns:
        text = fmt(row["clusters"], brackets=False)
        return text, re.compile(r"^" + re.escape(text) + r"(?= )")
    parts = [re.escape(p) for p in row["model"].split("→")]
    pattern = r"(?:^|(?<=\s))" + r".*?".join(parts)
    key = row["model"]
    if "cite" in row:
        pattern += re.escape(f"{NBSP}[{row['cite']}]")
        key += f" [{row['cite']}]"
    return key, re.compile(pattern + r"(?= )")


def row_values(section: Any, row: dict[str, Any]) -> list[str]:
    """The row's printed numbers, in column order (empty cells are not printed)."""
    return [
        fmt(row[c])
        for c in section.columns
        if row[c] is not None and c != "clusters"
    ]


def rest_of_line(line: str, match: re.Match[str]) -> str:
    """What follows the row label, with printed deltas "(+2.3)" dropped."""
    return DELTA.sub("", line[match.end():]).strip()


def is_data_line(line: str) -> bool:
    return bool(re.search(r"\d(?:\([+-][\d.]+\))?$", line)) and not line.startswith("Table ")


def excerpt_lines() -> list[str]:
    return EXCERPT.read_text(encoding="utf-8").splitlines()


def table_blocks() -> dict[str, list[str]]:
    """Excerpt lines per table: each table's lines end with its "Table N:" caption."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in excerpt_lines():
        m = re.match(r"^Table (\d+): ", line)
        if m:
            blocks[f"table{m.group(1)}"] = current
            current = []
        else:
            current.append(line)
    assert not current, "excerpt must end with a table caption"
    return blocks


TABLES = paper.load_paper_tables()
BLOCKS = table_blocks()


def all_rows() -> list[tuple[str, Any, dict[str, Any]]]:
    return [(tid, s, r) for tid, t in TABLES.items() for s, r in t.iter_rows()]


# --------------------------------------------------------------------------- structure


def test_all_tables_present_with_expected_rows() -> None:
    assert list(TABLES) == [f"table{i}" for i in range(1, 9)]
    for tid, counts in EXPECTED_SECTION_ROWS.items():
        table = TABLES[tid]
        assert [len(s.rows) for s in table.sections] == counts, tid
        assert table.task == EXPECTED_TASKS[tid]
        assert table.title and table.flops_note
    assert sum(t.n_rows for t in TABLES.values()) == 191


def test_excerpt_has_all_captions_and_data_lines() -> None:
    assert list(BLOCKS) == [f"table{i}" for i in range(1, 9)]
    n_data = {tid: sum(is_data_line(l) for l in lines) for tid, lines in BLOCKS.items()}
    # table 4 prints both detectors on one line (22 lines); the others one row per line
    assert n_data == {
        "table1": 60, "table2": 8, "table3": 30, "table4": 22,
        "table5": 36, "table6": 7, "table7": 4, "table8": 8,
    }


def test_table1_sections_carry_the_group_headers() -> None:
    names = [s.name for s in TABLES["table1"].sections]
    assert names == ["tiny model (~2.5G)", "small model (~4.5G)",
                     "base model (~9.0G)", "large model (~18.0G)"]
    headers = [l for l in BLOCKS["table1"] if re.match(r"^(tiny|small|base|large) model ", l)]
    for name, line in zip(names, headers, strict=True):
        size, gflops = re.match(r"(\w+) model \(~([\d.]+)G\)", name).groups()
        assert line.startswith(f"{size} model {gflops}"), (name, line[:40])


def test_settings_of_downstream_sections() -> None:
    settings = {tid: [s.setting for s in TABLES[tid].sections] for tid in ("table3", "table4", "table5")}
    assert settings["table3"] == [
        {"detector": "mask_rcnn", "schedule": "3x_ms"},
        {"detector": "cascade_mask_rcnn", "schedule": "3x_ms"},
    ]
    assert settings["table4"] == [
        {"detector": "mask_rcnn", "schedule": "1x"},
        {"detector": "retinanet", "schedule": "1x"},
    ]
    assert settings["table5"] == [
        {"head": "semantic_fpn", "iters": 80000},
        {"head": "upernet", "iters": 160000},
    ]
    assert "512x2048" in TABLES["table5"].flops_note and "512x512" in TABLES["table5"].flops_note


def test_ours_only_on_our_models() -> None:
    for tid, section, row in all_rows():
        name = row["model"]
        if name in OURS_BY_NAME:
            assert row.get("ours") == OURS_BY_NAME[name] and "variant" not in row, (tid, name)
        elif tid == "table6" and name in ABLATED:  # the paper's text: the ablations are of SecViT-T
            assert row.get("ours") == "secvit_tiny" and row.get("variant") == ABLATED[name], (tid, name)
        else:
            assert "ours" not in row, (tid, name)
        if tid == "table6" and name not in OURS_BY_NAME:
            assert re.fullmatch(r"[a-z0-9_]+", row.get("variant", "")), (tid, name)
    variants = [r.get("variant") for _, r in TABLES["table6"].iter_rows()]
    assert set(ABLATED.values()) <= set(variants)
    for _, row in TABLES["table7"].iter_rows():
        assert row["ours"] == "secvit_small" and row["clusters"][-1] is None


# --------------------------------------------------------------------------- transcription


def test_every_row_matches_its_printed_line() -> None:
    """Rebuild each printed line's numbers from the YAML and compare exactly.

    A label found on one line of its table (table 4: one line for both
    detectors) must be followed by exactly the row's numbers, all sections
    concatenated; a label on several lines (e.g. SecViT-S in both halves of
    table 3) is paired with its rows in order.
    """
    checked = 0
    for tid, table in TABLES.items():
        block = BLOCKS[tid]
        groups: dict[str, list[tuple[Any, dict[str, Any], re.Pattern[str]]]] = {}
        for section, row in table.iter_rows():
            key, pattern = row_label(section, row)
            groups.setdefault(key, []).append((section, row, pattern))
        covered: set[int] = set()
        for key, entries in groups.items():
            pattern = entries[0][2]
            hits = [(i, pattern.search(l)) for i, l in enumerate(block)]
            hits = [(i, m) for i, m in hits if m]
            assert hits, f"{tid}: {key!r} not found in the excerpt"
            if len(hits) == 1:
                i, m = hits[0]
                expected = " ".join(v for s, r, _ in entries for v in row_values(s, r))
                assert rest_of_line(block[i], m) == expected, (tid, key, block[i][:200])
            else:
                assert len(hits) == len(entries), f"{tid}: {key!r} on {len(hits)} lines, {len(entries)} rows"
                for (i, m), (s, r, _) in zip(hits, entries):
                    expected = " ".join(row_values(s, r))
                    assert rest_of_line(block[i], m) == expected, (tid, key, block[i][:200])
            covered.update(i for i, _ in hits)
            checked += len(entries)
        data_lines = {i for i, l in enumerate(block) if is_data_line(l)}
        assert covered == data_lines, f"{tid}: printed rows not transcribed: " + repr(
            [block[i][:60] for i in sorted(data_lines - covered)]
        )
    assert checked == 191


def _sample() -> list[tuple[str, Any, dict[str, Any]]]:
    """Every k-th row of each table (k = rows // 5), plus each table's last row."""
    picked = []
    for tid, table in TABLES.items():
        rows = list(table.iter_rows())
        k = max(1, len(rows) // 5)
        idx = sorted(set(range(0, len(rows), k)) | {len(rows) - 1})
        picked += [(tid, *rows[i]) for i in idx]
    return picked


SAMPLE = _sample()


def test_sample_is_large_and_spread() -> None:
    assert len(SAMPLE) >= 25
    assert {tid for tid, _, _ in SAMPLE} == set(TABLES)


@pytest.mark.parametrize(
    "tid,section,row", SAMPLE, ids=[f"{t}-{r['model']}-{i}" for i, (t, _, r) in enumerate(SAMPLE)]
)
def test_sampled_row_fragment_in_excerpt(tid: str, section: Any, row: dict[str, Any]) -> None:
    """The row's numbers, formatted as printed, follow its name on one line."""
    _, label = row_label(section, row)
    fragment = " ".join(row_values(section, row))
    ok = re.compile(r"(?:^| )" + re.escape(fragment) + r"(?:\([+-][\d.]+\))?(?: |$)")
    lines = [l for l in BLOCKS[tid] if label.search(l)]
    assert any(ok.search(l[label.search(l).end():]) for l in lines), (tid, row["model"], fragment)


def test_null_cells_are_the_papers_empty_cells() -> None:
    nulls = sorted(
        (tid, r["model"], s.name, c)
        for tid, s, r in all_rows()
        for c in s.columns
        if r[c] is None
    )
    assert nulls == sorted([
        ("table4", "BiFormer-S", "Mask R-CNN 1x", "params_m"),
        ("table4", "BiFormer-S", "Mask R-CNN 1x", "gflops"),
        ("table4", "BiFormer-S", "RetinaNet 1x", "params_m"),
        ("table4", "BiFormer-S", "RetinaNet 1x", "gflops"),
        ("table4", "FAT-B3", "Mask R-CNN 1x", "gflops"),
        ("table4", "FAT-B3", "RetinaNet 1x", "gflops"),
    ])


def test_excerpt_is_verbatim_subset_of_paper() -> None:
    if not PAPER_TEXT.exists():
        pytest.skip(f"paper text not available at {PAPER_TEXT} (outside the repository)")
    paper_lines = PAPER_TEXT.read_text(encoding="utf-8").splitlines()
    known = set(paper_lines)
    lines = excerpt_lines()
    missing = [l[:80] for l in lines if l not in known]
    assert not missing, missing
    # ... and in the paper's order
    pos = 0
    for line in lines:
        pos = paper_lines.index(line, pos) + 1


# --------------------------------------------------------------------------- lookups


@pytest.mark.parametrize(
    "args,kwargs,expected",
    [
        (("table1", "secvit_small", "top1"), {}, 84.2),
        (("table1", "secvit_large", "gflops"), {}, 18.1),
        (("table1", "secvit_tiny", "params_m"), {}, 15),
        (("table2", "sec_swin_tiny", "throughput"), {}, 1482),
        (("table2", "sec_fastervit_1", "top1"), {}, 83.8),
        (("table3", "secvit_base", "ap_b", {"detector": "cascade_mask_rcnn"}), {}, 55.1),
        (("table3", "secvit_base", "ap_m", {"detector": "mask_rcnn"}), {}, 46.1),
        (("table3", "secvit_small", "gflops", {"detector": "mask_rcnn", "schedule": "3x_ms"}), {}, 259),
        (("table4", "secvit_tiny", "ap_b", {"detector": "retinanet"}), {}, 45.6),
        (("table4", "secvit_tiny", "ap_m", {"detector": "mask_rcnn"}), {}, 42.9),
        (("table4", "secvit_large", "ap_l_b"), {}, 66.1),
        (("table5", "secvit_large", "miou", {"head": "upernet"}), {}, 53.6),
        (("table5", "secvit_tiny", "miou"), {}, 47.2),
        (("table5", "secvit_small", "gflops", {"head": "semantic_fpn"}), {}, 177),
        (("table6", "secvit_tiny", "top1"), {}, 82.6),
        (("table6", "secvit_tiny", "top1"), {"where": {"variant": "seca_to_cswsa"}}, 81.4),
        (("table6", "secvit_tiny", "params_m"), {"where": {"variant": "no_conv_stem"}}, 14),
        (("table7", "secvit_small", "top1"), {"where": {"clusters": [64, 16, 4, None]}}, 84.0),
        (("table7", "secvit_small", "gflops"), {"where": {"clusters": [32, 8, 2, None]}}, 4.4),
        (("table8", "secvit_base", "channels"), {}, [80, 160, 320, 512]),
        (("table8", "sec_fastervit_0", "heads"), {}, [None, None, 8, 16]),
        (("table1", "sec_swin_tiny", "top1"), {}, None),
        (("table5", "sec_fastervit_0", "miou"), {}, None),
    ],
)
def test_paper_value(args: tuple, kwargs: dict, expected: Any) -> None:
    value = paper.paper_value(*args, **kwargs)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "call",
    [
        lambda: paper.paper_value("table3", "secvit_small", "ap_b"),  # two detectors
        lambda: paper.paper_value("table7", "secvit_small", "top1"),  # four cluster settings
        lambda: paper.paper_value("table1", "secvit_small", "top5"),  # unknown metric
        lambda: paper.paper_value("table1", "secvit_huge", "top1"),  # unknown model
    ],
)
def test_paper_value_rejects_ambiguous_or_unknown(call: Callable[[], Any]) -> None:
    with pytest.raises(ValueError):
        call()


def test_paper_value_unknown_table() -> None:
    with pytest.raises(KeyError):
        paper.paper_value("table9", "secvit_small", "top1")


# --------------------------------------------------------------------------- validation

_GOOD_ROW = "{model: SecViT-S, ours: secvit_small, params_m: 27, gflops: 4.4, top1: 84.2}"


def _write(tmp_path: Path, row: str, columns: str = "[params_m, gflops, top1]") -> Path:
    path = tmp_path / "tables.yaml"
    path.write_text(
        "tables:\n"
        "  - id: tableX\n"
        "    title: test\n"
        "    task: classification\n"
        "    flops_note: test\n"
        "    sections:\n"
        "      - name: only\n"
        "        setting: {}\n"
        f"        columns: {columns}\n"
        "        rows:\n"
        f"          - {row}\n",
        encoding="utf-8",
    )
    return path


def test_loader_accepts_minimal_file(tmp_path: Path) -> None:
    tables = paper.load_paper_tables(_write(tmp_path, _GOOD_ROW))
    assert tables["tableX"].sections[0].rows[0]["top1"] == 84.2
    assert paper.paper_value("tableX", "secvit_small", "top1", path=_write(tmp_path, _GOOD_ROW)) == 84.2


def test_loader_rejects_unknown_metric_key(tmp_path: Path) -> None:
    bad = _GOOD_ROW.replace("top1: 84.2", "top1: 84.2, top5: 96.9")
    with pytest.raises(ValueError, match=r"tableX.*SecViT-S.*unknown metric key 'top5'"):
        paper.load_paper_tables(_write(tmp_path, bad))


def test_loader_rejects_unknown_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tableX.*unknown metric key 'top5'"):
        paper.load_paper_tables(_write(tmp_path, _GOOD_ROW, "[params_m, gflops, top1, top5]"))


def test_loader_rejects_value_outside_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tableX.*SecViT-S.*'top1'.*not in"):
        paper.load_paper_tables(_write(tmp_path, _GOOD_ROW, "[params_m, gflops]"))


def test_loader_rejects_missing_cell_and_bad_ours(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing cells"):
        paper.load_paper_tables(_write(tmp_path, _GOOD_ROW.replace(", top1: 84.2", "")))
    with pytest.raises(ValueError, match="unknown 'ours'"):
        paper.load_paper_tables(_write(tmp_path, _GOOD_ROW.replace("secvit_small", "secvit_s")))
