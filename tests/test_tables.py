"""Result tables, plots and cluster visualisation on a hand-written results directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from secvit.errors import SecvitError
from secvit.models import VARIANTS, create
from secvit.tables.paper import load_paper_tables
from secvit.tables.plots import write_plots
from secvit.tables.render import compare_cell, write_tables
from secvit.tables.results import load_results, run_key
from secvit.visualize import visualize_clusters

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = {"key": "secvit_tiny", "model": "secvit_tiny", "clusters": [32, 8, 2, 1], "params": 14_981_800,
        "gflops": 2.7213, "gflops_no_attn": 2.5134, "throughput": 123.4, "throughput_device": "cpu"}
SWEEP = {"key": "secvit_small-c64-16-4-1", "model": "secvit_small", "clusters": [64, 16, 4, 1],
         "params": 26_776_104, "gflops": 4.6123, "gflops_no_attn": 4.2987, "throughput": None,
         "throughput_device": None}
# Every measured figure the fixture provides, as rendered, plus the parameter counts of
# table 8 (counted on the registry's models where complexity.json has no row).
ALLOWED_OURS = {"14.98", "2.51", "2.72", "81.95", "4.30", "4.61", "83.77", "26.78", "54.68", "96.50"}


def _metrics(model: str, best_top1: float) -> dict:
    return {"model": model, "epochs": 2, "best_top1": best_top1, "best_top5": 99.0, "best_epoch": 1,
            "best_weights": "ema", "final_top1": best_top1 - 1, "final_top5": 98.0, "final_top1_ema": best_top1,
            "final_top5_ema": 99.0, "train_loss": 1.25, "train_images_per_s": 50.0, "skipped_images": 0,
            "num_classes": 4, "world_size": 1, "global_batch": 32, "accumulation": 2, "lr": 1e-3}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _tsv(path: Path, name: str, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    root = tmp_path / "results" / "smoke"
    _write(root / "complexity.json", {"img_size": 224, "flop_convention": "fvcore test convention", "rows": [TINY, SWEEP]})
    _write(root / "pretrain" / "secvit_tiny" / "metrics.json", _metrics("secvit_tiny", 81.954))
    _write(root / "pretrain" / "secvit_small-c64-16-4-1" / "metrics.json", _metrics("secvit_small", 83.77))
    plots = root / "pretrain" / "secvit_tiny" / "dvclive" / "plots" / "metrics"
    _tsv(plots / "train" / "loss.tsv", "loss", [1.4, 1.2, 1.1])
    _tsv(plots / "val" / "top1.tsv", "top1", [40.0, 60.0, 81.954])
    _tsv(plots / "val" / "top1_ema.tsv", "top1_ema", [30.0, 55.0, 80.0])
    return root


def _row(text: str, model: str, table: int) -> str:
    """The markdown line of ``model`` in table ``table`` (first section that has it)."""
    body = text.split(f"## Table {table}:")[1].split("\n## ")[0]
    return next(line for line in body.splitlines() if line.startswith(f"| {model} ") or line.startswith(f"| **{model}**"))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_results_mapping(results_dir: Path) -> None:
    tables = load_paper_tables()
    results = load_results(results_dir)
    assert results.profile == "smoke"
    competitor = tables["table1"].sections[0].rows[0]
    assert "ours" not in competitor and results.measured("table1", {}, competitor) == {}
    tiny = next(r for _, r in tables["table1"].iter_rows() if r.get("ours") == "secvit_tiny")
    m = results.measured("table1", {}, tiny)
    assert m["params_m"] == pytest.approx(14.9818) and m["gflops"] == 2.5134 and m["top1"] == 81.954
    assert results.gflops_all_ops("table1", tiny) == 2.7213
    rows7 = [r for _, r in tables["table7"].iter_rows()]
    assert [results.row_key("table7", r) for r in rows7] == [
        "secvit_small-c64-16-4-1", "secvit_small-c64-16-2-1", "secvit_small-c64-8-2-1", "secvit_small"]
    assert results.measured("table7", {}, rows7[0])["top1"] == 83.77
    assert results.measured("table7", {}, rows7[3]) == {"params_m": None, "gflops": None, "throughput": None, "top1": None}
    swin = next(r for _, r in tables["table2"].iter_rows() if r.get("ours") == "sec_swin_tiny")
    assert set(results.measured("table2", {"baseline": "swin"}, swin).values()) == {None}  # ours, not measured here
    assert run_key("secvit_small", [32, 8, 2, None]) == "secvit_small"


def test_detection_and_segmentation_files_are_read(tmp_path: Path) -> None:
    _write(tmp_path / "detection" / "secvit_tiny-retinanet-1x" / "metrics.json", {"ap_b": 44.1, "params_m": 24.2})
    _write(tmp_path / "segmentation" / "secvit_small-upernet" / "metrics.json", {"miou": 49.0})
    results = load_results(tmp_path, "paper")
    tables = load_paper_tables()
    sec = next(s for s in tables["table4"].sections if s.setting["detector"] == "retinanet")
    tiny = next(r for r in sec.rows if r.get("ours") == "secvit_tiny")
    m = results.measured("table4", sec.setting, tiny)
    assert m["ap_b"] == 44.1 and m["params_m"] == 24.2 and m["ap_l_b"] is None
    seg = next(s for s in tables["table5"].sections if s.setting["head"] == "upernet")
    small = next(r for r in seg.rows if r.get("ours") == "secvit_small")
    assert results.measured("table5", seg.setting, small)["miou"] == 49.0
    text = write_tables(tmp_path, "paper", tmp_path / "tables.md")
    retinanet = text.split("### RetinaNet 1x")[1].split("\n### ")[0]
    cells = next(_cells(line) for line in retinanet.splitlines() if line.startswith("| **SecViT-T**"))
    assert cells[1:4] == ["24 / 24.20 (+0.20)", "202 / –", "45.6 / 44.10 (-1.50)"]
    assert "50.6 / 49.00 (-1.60)" in text
    assert "WARNING" not in text


def test_the_released_lane_is_labelled(tmp_path: Path) -> None:
    """Table 1's released checkpoint evaluated here sits in its own column; tables 3-5 show the dense runs from it as
    rows of their own, labelled; our lane's figures stay where they were."""
    _write(tmp_path / "detection" / "secvit_tiny-retinanet-1x" / "metrics.json", {"ap_b": 44.1})
    _write(tmp_path / "released" / "detection" / "secvit_tiny-retinanet-1x" / "metrics.json", {"ap_b": 45.3})
    _write(tmp_path / "released" / "pretrain" / "secvit_tiny" / "metrics.json", {"best_top1": 82.55, "top1": 82.4, "top1_ema": 82.55})
    text = write_tables(tmp_path, "paper", tmp_path / "tables.md")
    assert "Lanes: every measured figure comes from our pretraining" in text
    table1 = text.split("## Table 1:")[1].split("\n## Table 2:")[0]
    assert "Top-1 (%) released, evaluated here |" in table1
    row = next(_cells(line) for line in table1.splitlines() if line.startswith("| **SecViT-T**"))
    assert row[3] == "82.6 / –" and row[-1] == "82.6 / 82.55 (-0.05)"
    retinanet = text.split("### RetinaNet 1x")[1].split("\n### ")[0]
    ours = next(_cells(line) for line in retinanet.splitlines() if line.startswith("| **SecViT-T** "))
    released = next(_cells(line) for line in retinanet.splitlines() if line.startswith("| **SecViT-T** (released backbone)"))
    assert ours[3] == "45.6 / 44.10 (-1.50)" and released[3] == "45.6 / 45.30 (-0.30)"
    assert load_results(tmp_path / "detection", "paper").released is None  # no released/ folder: no lane there


def test_compare_cell_formats() -> None:
    assert compare_cell("top1", 84.2, 83.954) == "84.2 / 83.95 (-0.25)"
    assert compare_cell("top1", 84.2, None) == "84.2 / –"
    assert compare_cell("gflops", None, 3.0) == "– / 3.00"
    assert compare_cell("params_m", 15, 15.001) == "15 / 15.00 (+0.00)"
    assert compare_cell("throughput", 1723, 1500.4) == "1723 / 1500 (-223)"


def test_write_tables(results_dir: Path) -> None:
    out = results_dir / "tables.md"
    text = write_tables(results_dir, "smoke", out)
    assert out.read_text(encoding="utf-8") == text
    first = out.read_bytes()
    write_tables(results_dir, "smoke", out)
    assert out.read_bytes() == first
    assert "`smoke`" in text.split("## Table 1")[0] and "WARNING" in text.split("## Table 1")[0]
    for n in range(1, 9):
        assert f"## Table {n}: " in text

    tiny = _cells(_row(text, "SecViT-T", 1))
    assert tiny[1:] == ["15 / 14.98 (-0.02)", "2.5 / 2.51 (+0.01)", "82.6 / 81.95 (-0.65)", "2.72"]
    assert _cells(_row(text, "SecViT-S", 1))[1:] == ["27 / –", "4.4 / –", "84.2 / –", "–"]
    assert _cells(_row(text, "SMT-T [34]", 1))[1:] == ["12", "2.4", "82.2", ""]
    assert _cells(_row(text, "SecViT-S", 7))[1:] == ["64, 16, 4, global", "4.3 / 4.30 (+0.00)", "84.0 / 83.77 (-0.23)", "4.61"]

    # Never a measured number the fixture did not provide; downstream tables only paper figures.
    paper_part = text.split("## Measured runs")[0]
    assert set(re.findall(r" / ([-0-9.]+)", paper_part)) <= ALLOWED_OURS
    # rendering measures nothing: a model without a complexity row (the SEC variants here) has no params of ours
    assert _cells(_row(text, "SEC-Swin-T", 8))[5:7] == ["29 / –", "4.9 / –"]
    for n in (2, 3, 4, 5):
        body = text.split(f"## Table {n}:")[1].split("\n## ")[0]
        assert not re.search(r"/ [0-9]", body), f"table {n} shows a measured number"

    for name, variant in VARIANTS.items():
        label = {"secvit_tiny": "SecViT-T", "secvit_small": "SecViT-S", "secvit_base": "SecViT-B", "secvit_large": "SecViT-L"}[name]
        cells = _cells(_row(text, label, 8))
        assert cells[1:5] == [", ".join(map(str, variant.depths)), ", ".join(map(str, variant.widths)),
                              ", ".join(map(str, variant.heads)), "3"]


def test_tables_without_results(tmp_path: Path) -> None:
    text = write_tables(tmp_path / "missing", "paper", tmp_path / "t.md")
    assert "WARNING" not in text and "No pretraining results found." in text
    assert _cells(_row(text, "SecViT-T", 1))[1:4] == ["15 / –", "2.5 / –", "82.6 / –"]


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    with Image.open(path) as img:
        assert img.width > 200 and img.height > 200


def test_write_plots(results_dir: Path, tmp_path: Path) -> None:
    paths = write_plots(results_dir, "smoke")
    assert [p.name for p in paths] == ["top1_vs_flops.png", "training_curves.png"]
    for path in paths:
        assert path.parent == results_dir / "plots"
        _check_png(path)
    first = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in write_plots(results_dir, "smoke")] == first
    for path in write_plots(tmp_path / "empty", "paper"):
        _check_png(path)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "scene.png"
    img = Image.new("RGB", (160, 120), (30, 120, 200))
    draw = ImageDraw.Draw(img)
    draw.ellipse((30, 20, 110, 100), fill=(240, 200, 40))
    draw.rectangle((0, 95, 160, 120), fill=(40, 160, 60))
    img.save(path)
    return path


def test_visualize_clusters(image: Path, tmp_path: Path) -> None:
    out = visualize_clusters(image, "secvit_tiny", out=tmp_path / "random.png", img_size=112)
    _check_png(out)
    model = create("secvit_tiny", num_classes=4)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    out = visualize_clusters(image, "secvit_tiny", checkpoint=ckpt, out=tmp_path / "trained.png", img_size=112, head=1)
    _check_png(out)


@pytest.mark.parametrize("kind", ["missing", "not_an_image"])
def test_visualize_bad_image(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    if kind == "not_an_image":
        path.write_text("definitely not a PNG\n")
    with pytest.raises(SecvitError) as info:
        visualize_clusters(path, "secvit_tiny", out=tmp_path / "o.png")
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "o.png").exists()


def test_ablation_and_peer_rows_read_their_runs(results_dir: Path) -> None:
    """Table 6's ablated SecViT-T rows read run ``secvit_tiny-<variant>``; peers trained with the recipe join table 1."""
    cswsa = {**TINY, "key": "secvit_tiny-seca_to_cswsa", "ablation": "seca_to_cswsa", "gflops": 2.6691, "gflops_no_attn": 2.5081}
    stem = {**TINY, "key": "secvit_tiny-no_conv_stem", "ablation": "no_conv_stem", "params": 14_086_696,
            "gflops": 2.3321, "gflops_no_attn": 2.1213}
    peer = {**TINY, "key": "stvit_small", "model": "stvit_small", "clusters": None, "params": 25_495_624,
            "gflops": 4.3571, "gflops_no_attn": 4.1241}
    _write(results_dir / "complexity.json", {"img_size": 224, "rows": [TINY, cswsa, stem, peer]})
    _write(results_dir / "pretrain" / "secvit_tiny-seca_to_cswsa" / "metrics.json", _metrics("secvit_tiny", 41.5))
    _write(results_dir / "pretrain" / "stvit_small" / "metrics.json", _metrics("stvit_small", 37.25))
    text = write_tables(results_dir, "smoke", results_dir / "tables.md")
    assert _cells(_row(text, "SECA→CSWSA [12]", 6))[1:] == ["15 / 14.98 (-0.02)", "2.5 / 2.51 (+0.01)", "81.4 / 41.50 (-39.90)", "2.67"]
    assert _cells(_row(text, "w/o Conv Stem", 6))[1:] == ["14 / 14.09 (+0.09)", "2.1 / 2.12 (+0.02)", "82.3 / –", "2.33"]
    assert _cells(_row(text, "w/o LCE", 6))[1:] == ["15 / –", "2.5 / –", "82.4 / –", "–"]  # no run: nothing measured
    assert _cells(_row(text, "Swin-T", 6))[1:] == ["29", "4.5", "81.3", ""]  # the baseline is not ours
    assert "not implemented" not in text.split("## Table 7")[0]
    assert _cells(_row(text, "`stvit_small` (ours, not in the paper's table 1)", 1))[1:] == [
        "– / 25.50", "– / 4.12", "– / 37.25", "4.36"]
