"""Tables 6 and 7: the ablations as constructor options of the SecViT family, their complexity
against the paper, their runs in params.yaml, and a smoke pretraining run per family."""

import json
import shutil
from functools import cache

import pytest
import timm
import torch
import yaml
from conftest import make_project, one_line_error, secvit, secvit_in_process

from secvit.complexity import measure
from secvit.errors import SecvitError
from secvit.models.cswsa import cross_shaped_attention
from secvit.models.variants import ABLATIONS, ablation_options
from secvit.runs import run_key
from secvit.tables.paper import load_paper_tables

TABLES = load_paper_tables()


def _rows(table_id: str) -> list[dict]:
    return [row for _, row in TABLES[table_id].iter_rows() if "ours" in row]


def _options(row: dict) -> dict:
    """Constructor options of a table-6/7 row of ours: its ablation, or its clusters (1 = global)."""
    if "variant" in row:
        return ablation_options(row["variant"])
    if row.get("clusters"):
        return {"clusters": tuple(1 if c is None else c for c in row["clusters"])}
    return {}


@cache
def _complexity(model: str, key: str):
    row = next(r for table in ("table6", "table7") for r in _rows(table) if _key(table, r) == key)
    return measure(model, 224, **_options(row))


def _key(table_id: str, row: dict) -> str:
    return run_key(row["ours"], row.get("clusters")) if table_id == "table7" else run_key(row["ours"], ablation=row.get("variant"))


# Rows whose printed complexity our models do not reach, with the measured gap (params M, GFLOPs in the paper's
# convention, fvcore without the attention matmuls).
GAPS = {
    "sec_swin_tiny": "SEC-Swin-T: 28.38M and 4.41G (all ops 4.68G) vs 29M 4.9G, as in table 2 (tests/test_peers.py)",
    "secvit_small-c64-16-4-1": "4.37G vs 4.3",
    "secvit_small-c64-16-2-1": "4.37G vs 4.3",
    "secvit_small-c64-8-2-1": "4.37G vs 4.3",
}
CLUSTER_GAP = (
    "the cluster count changes only the attention matmuls, which the paper's convention leaves out: 4.37G for every "
    "setting (the released 32/8/2 row's 4.4); all ops give 4.57, 4.66, 4.70 and 4.76G, so the paper's 4.3 for finer "
    "clusters matches neither convention"
)


def _cases(table_id: str) -> list:
    cases = []
    for row in _rows(table_id):
        key = _key(table_id, row)
        marks = [pytest.mark.xfail(strict=True, reason=GAPS[key] + ("; " + CLUSTER_GAP if table_id == "table7" else ""))] if key in GAPS else []
        cases.append(pytest.param(table_id, row, id=key, marks=marks))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("table_id,row", _cases("table6") + _cases("table7"))
def test_complexity_reproduces_tables_6_and_7(table_id, row):
    """Params (table 6) and GFLOPs of each row of ours, at the paper's precision, in the convention the
    complexity stage labels the paper's (``gflops_no_attn``)."""
    result = _complexity(row["ours"], _key(table_id, row))
    if "params_m" in row:
        assert round(result.params / 1e6) == row["params_m"], result
    assert round(result.gflops_no_attn, 1) == row["gflops"], result


def test_every_ablation_row_is_an_option_and_a_run(repo_root):
    """Each table-6 row of ours names an ablation of the family, and params.yaml trains every row of tables 6 and 7."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    ablated = [r for r in _rows("table6") if "variant" in r]
    assert {r["variant"] for r in ablated} == set(ABLATIONS) == set(params["ablations"]["variants"])
    assert {r["ours"] for r in ablated} == {params["ablations"]["model"]}
    sweep = {tuple(int(c) for c in text.split("-")) for text in params["sweep"]["clusters"]}
    for row in _rows("table7"):
        clusters = _options(row)["clusters"]
        assert row["ours"] == params["sweep"]["model"]
        assert clusters in sweep or run_key(row["ours"], clusters) == row["ours"]  # else the plain run


def test_every_run_has_a_recipe(repo_root):
    """Each pretraining run (runs, ablations, sweep) has its own settings in its profile, with its model's rate."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    for run in params["runs"].values():
        assert run["model"] in params[run["profile"]]["pretrain_runs"], run
    for profile in ("smoke", "paper"):
        own = params[profile]["pretrain_runs"]
        ablations, sweep = params["ablations"], params["sweep"]
        keys = [f"{ablations['model']}-{v}" for v in ablations["variants"]] + [f"{sweep['model']}-c{c}" for c in sweep["clusters"]]
        for key in keys:
            assert own[key]["drop_path"] == own[key.split("-")[0]]["drop_path"], (profile, key)


def _copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not missing, missing  # everything dst has, src has too
    assert unexpected, "the ablation removed nothing"


@pytest.mark.parametrize("option,module", [("no_cpe", "cpe"), ("no_lce", "lce")])
def test_dropping_a_module_is_the_model_with_it_zeroed(option, module):
    """``cpe=False`` / ``lce=False`` compute exactly the full model with that depthwise conv at zero."""
    torch.manual_seed(0)
    full = timm.create_model("secvit_tiny", num_classes=10).eval()
    ablated = timm.create_model("secvit_tiny", num_classes=10, **ablation_options(option)).eval()
    _copy_weights(full, ablated)
    removed = [n for n, p in full.named_parameters() if f".{module}." in n]
    assert removed and not [n for n, _ in ablated.named_parameters() if f".{module}." in n]
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        assert not torch.allclose(full(x), ablated(x), atol=1e-4)
        for name, p in full.named_parameters():
            if name in removed:
                p.zero_()
        torch.testing.assert_close(ablated(x), full(x), rtol=1e-5, atol=1e-5)


def test_no_conv_stem_is_patch_embedding_and_merging():
    model = timm.create_model("secvit_tiny", **ablation_options("no_conv_stem"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.stride != (1, 1)]
    assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [((4, 4), (4, 4), (0, 0))] + [((2, 2), (2, 2), (0, 0))] * 3
    x = torch.randn(1, 3, 37, 50)  # sides not divisible by 4: padded, same stage sizes as the conv stem
    with torch.no_grad():
        got = [t.shape[-2:] for t in model.eval().forward_intermediates(x, intermediates_only=True)]
        want = [t.shape[-2:] for t in timm.create_model("secvit_tiny").eval().forward_intermediates(x, intermediates_only=True)]
    assert got == want


def _cross_reference(qkv: torch.Tensor, stripe: int) -> torch.Tensor:
    """CSWSA by brute force: full attention per head, masked to the token's own row or column stripe."""
    bsz, height, width, _, heads, dim = qkv.shape
    q, k, v = qkv.reshape(bsz, height * width, 3, heads, dim).permute(2, 0, 3, 1, 4)
    rows = torch.arange(height).repeat_interleave(width) // stripe
    cols = torch.arange(width).repeat(height) // stripe
    split = (heads + 1) // 2
    outs = []
    for h in range(heads):
        group = rows if h < split else cols
        scores = (q[:, h] @ k[:, h].transpose(-1, -2)).masked_fill(group[:, None] != group[None, :], float("-inf"))
        outs.append(scores.softmax(-1) @ v[:, h])
    return torch.cat(outs, dim=-1).reshape(bsz, height, width, heads * dim)


@pytest.mark.parametrize("height,width,heads,stripe", [(6, 8, 4, 2), (5, 7, 3, 2), (7, 7, 2, 7), (10, 9, 5, 7), (4, 4, 1, 1)])
def test_cross_shaped_attention_matches_brute_force(height, width, heads, stripe):
    """Half the heads in horizontal stripes, half in vertical ones (odd: one more horizontal), padded sides masked."""
    qkv = torch.randn(2, height, width, 3, heads, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(cross_shaped_attention(qkv, stripe), _cross_reference(qkv, stripe))


def test_cswsa_model_trains_at_any_size():
    model = timm.create_model("secvit_tiny", num_classes=3, **ablation_options("seca_to_cswsa"))
    assert {type(b.attn).__name__ for s in model.stages for b in s.blocks} == {"CSWSA"}
    assert [s.blocks[0].attn.stripe for s in model.stages] == [1, 2, 7, 7]
    model(torch.randn(2, 3, 20, 36)).sum().backward()  # no cluster count to satisfy: no minimum size
    assert all(p.grad is not None for p in model.parameters())


def test_bad_ablations_are_one_line_errors(tmp_path, repo_root):
    with pytest.raises(SecvitError, match="attention must be one of seca, cswsa"):
        timm.create_model("secvit_tiny", attention="window")
    project = make_project(tmp_path, repo_root)
    message = one_line_error(secvit(project, "pretrain", "--profile", "smoke", "--ablation", "no_ffn"))
    assert "unknown ablation 'no_ffn'" in message and "no_lce" in message
    # the other cases in this process (the command above ran as users run it)
    message = one_line_error(secvit_in_process(project, "pretrain", "--profile", "smoke", "--model", "stvit_small", "--ablation", "no_lce"))
    assert "SecViT family" in message
    assert "SecViT family" in one_line_error(secvit_in_process(project, "complexity", "stvit_small", "--ablation", "no_lce"))


def test_cli_complexity_of_an_ablation(tmp_path, repo_root):
    """`secvit complexity --ablation` measures table 6's "w/o Conv Stem" row: 14M params, 2.1 GFLOPs (paper convention)."""
    result = secvit(make_project(tmp_path, repo_root), "complexity", "secvit_tiny", "--ablation", "no_conv_stem", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["params"] == 14_086_696 and round(data["gflops_no_attn"], 1) == 2.1


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, repo_root):
    """A project with a smaller generated ImageNet and one-epoch smoke runs (same recipe otherwise)."""
    project = make_project(tmp_path_factory.mktemp("families"), repo_root)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["smoke"]["data"]["generate"]["imagenet"].update(train_per_class=16, val_per_class=8)
    params["smoke"]["pretrain"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert secvit(project, "data", "--profile", "smoke", "--dataset", "imagenet").returncode == 0
    yield project
    shutil.rmtree(project, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,run,options",
    [
        (("--model", "sec_swin_tiny"), "sec_swin_tiny", {}),
        (("--model", "sec_fastervit_0"), "sec_fastervit_0", {}),
        (("--model", "stvit_small"), "stvit_small", {}),
        (("--model", "pacavit_tiny"), "pacavit_tiny", {}),
        (("--ablation", "seca_to_cswsa"), "secvit_tiny-seca_to_cswsa", {"attention": "cswsa"}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_smoke_pretraining_of_each_family(tiny_project, args, run, options):
    """`secvit pretrain` trains one model of each family (and an ablation) with the profile's recipe; its best
    weights load strictly into the model it names."""
    result = secvit(tiny_project, "pretrain", "--profile", "smoke", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tiny_project / "results/smoke/pretrain" / run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["num_classes"] == 4 and 0 <= metrics["best_top1"] <= 100
    assert {k: metrics.get(k) for k in options} == options  # the run records its architecture options
    best = torch.load(tiny_project / "runs/smoke/pretrain" / run / "best.pth", map_location="cpu", weights_only=False)
    model = timm.create_model(metrics["model"], num_classes=4, **options)
    model.load_state_dict(best["model"], strict=True)
