"""Comparison backbones: SEC-Swin, SEC-FasterViT (table 2), STViT and PaCa-ViT (table 1).

Complexity against the paper / notes, stage widths, and forward passes at odd sizes (window
padding). timm's model contract (backward, features_only, forward_intermediates, pruning, classifier
reset, torch.fx) is tested for every family in test_model_contract.py.
"""

import json
import subprocess
import sys
from functools import cache

import pytest
import timm
import torch
from conftest import num_params, smallest_of_each_family

from secvit.errors import SecvitError
from secvit.models import available_models

SLOW = pytest.mark.slow

# Exact parameter counts and fvcore GFLOPs at 1x3x224x224 of our implementations:
# (params, all ops, without the attention matmuls QK^T and AV).
MEASURED = {
    "sec_swin_tiny": (28_379_848, 4.679, 4.406),
    "sec_swin_small": (49_793_224, 9.050, 8.600),
    "sec_fastervit_0": (25_858_344, 3.359, 3.288),
    "sec_fastervit_1": (42_187_816, 5.219, 5.106),
    "stvit_small": (25_495_624, 4.357, 4.124),
    "stvit_base": (51_691_288, 9.854, 9.418),
    "stvit_large": (94_971_096, 15.576, 14.890),
    "pacavit_tiny": (12_200_680, 3.237, 3.003),
    "pacavit_small": (22_037_704, 5.529, 5.127),
    "pacavit_base": (46_911_304, 9.574, 9.025),
}
# The notes' figures for STViT and PaCa-ViT: params (M), GFLOPs (all ops); we must be within 1%.
NOTES = {
    "stvit_small": (25.50, 4.37),
    "stvit_base": (51.70, 9.87),
    "stvit_large": (94.98, 15.60),
    "pacavit_tiny": (12.20, 3.24),
    "pacavit_small": (22.04, 5.53),
    "pacavit_base": (46.91, 9.57),
}
# Table 2 of the paper: params (M), GFLOPs. Ours must be within 1M params.
TABLE2 = {
    "sec_swin_tiny": (29, 4.9),
    "sec_swin_small": (50, 9.3),
    "sec_fastervit_0": (25, 3.6),
    "sec_fastervit_1": (41, 5.6),
}
SMALLEST = smallest_of_each_family(sorted(MEASURED))  # as the contract picks them
WIDTHS = {
    "sec_swin": (96, 192, 384, 768),
    "sec_fastervit_0": (64, 128, 256, 512),
    "sec_fastervit_1": (80, 160, 320, 640),
    "stvit_small": (64, 128, 320, 512),
    "stvit_base": (96, 192, 384, 512),
    "stvit_large": (96, 192, 448, 640),
    "pacavit_tiny": (96, 192, 320, 384),
    "pacavit_small": (96, 192, 320, 384),
    "pacavit_base": (96, 192, 384, 512),
}


def _widths(name):
    return WIDTHS["sec_swin" if name.startswith("sec_swin") else name]


@cache
def _eval_model(name):
    torch.manual_seed(0)
    return timm.create_model(name).eval()


@cache
def _complexity(name):
    from secvit.complexity import measure

    return measure(name)


def test_registered():
    models = set(available_models())
    assert set(MEASURED) <= models
    # the unmodified baselines of table 2 are registered but are not project backbones
    assert {"fastervit_0", "fastervit_1", "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224"} <= set(
        timm.list_models()
    )
    assert not {"fastervit_0", "fastervit_1"} & models


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_parameter_counts(name):
    params = num_params(name)
    assert params == MEASURED[name][0]
    if name in NOTES:
        assert params / 1e6 == pytest.approx(NOTES[name][0], rel=0.01)


@pytest.mark.parametrize(
    "name",
    [
        "sec_swin_tiny",
        "sec_swin_small",
        "sec_fastervit_0",
        pytest.param(
            "sec_fastervit_1",
            marks=pytest.mark.xfail(
                strict=True,
                reason="42.19M vs the paper's 41M: FasterViT-1 with SECA and FasterViT's position MLP kept; "
                "without the position MLP it would be 39.2M, so no reading of 'merely substitute the attention' gives 41M",
            ),
        ),
    ],
)
def test_parameters_match_table2(name):
    assert abs(MEASURED[name][0] / 1e6 - TABLE2[name][0]) <= 1.0


@SLOW
@pytest.mark.parametrize("name", sorted(MEASURED))
def test_flops(name):
    result = _complexity(name)
    assert result.params == MEASURED[name][0]
    assert result.gflops == pytest.approx(MEASURED[name][1], abs=0.002)
    assert result.gflops_no_attn == pytest.approx(MEASURED[name][2], abs=0.002)
    if name in NOTES:
        assert result.gflops == pytest.approx(NOTES[name][1], rel=0.01)


@SLOW
@pytest.mark.xfail(
    strict=True,
    reason="table 2's FLOPs exceed our counts in both conventions (SEC-Swin-T 4.68/4.41 vs 4.9, SEC-Swin-S "
    "9.05/8.60 vs 9.3, SEC-FasterViT-0 3.36/3.29 vs 3.6, SEC-FasterViT-1 5.22/5.11 vs 5.6); the paper does not "
    "say what else its SEC models compute",
)
@pytest.mark.parametrize("name", sorted(TABLE2))
def test_flops_match_table2(name):
    result = _complexity(name)
    assert min(abs(result.gflops - TABLE2[name][1]), abs(result.gflops_no_attn - TABLE2[name][1])) <= 0.1


@pytest.mark.parametrize("name", SMALLEST)
def test_forward_224_and_odd_size(name):
    model = _eval_model(name)
    with torch.no_grad():
        for size in [(224, 224), (200, 296), (97, 161)]:
            out = model(torch.randn(1, 3, *size))
            assert out.shape == (1, 1000) and torch.isfinite(out).all(), size


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_stage_widths(name):
    with torch.device("meta"):
        model = timm.create_model(name, features_only=True)
    assert model.feature_info.channels() == list(_widths(name))
    assert model.feature_info.reduction() == [4, 8, 16, 32]


@pytest.mark.parametrize("name", SMALLEST)
def test_features_only_at_odd_sizes(name):
    widths = _widths(name)
    model = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 200, 296))
    assert [tuple(f.shape) for f in feats] == [
        (1, widths[0], 50, 74),
        (1, widths[1], 25, 37),
        (1, widths[2], 13, 19),
        (1, widths[3], 7, 10),
    ]
    model = timm.create_model(name, features_only=True, out_indices=(1, 2)).eval()
    assert model.feature_info.channels() == list(widths[1:3])
    assert model.feature_info.reduction() == [8, 16]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 128, 160))
    assert [tuple(f.shape) for f in feats] == [(1, widths[1], 16, 20), (1, widths[2], 8, 10)]


@pytest.mark.parametrize("name", ["sec_swin_tiny", "sec_fastervit_0"])
def test_bad_input_is_one_clear_error(name):
    model = _eval_model(name)
    with pytest.raises(SecvitError, match="too small"):
        model(torch.randn(1, 3, 8, 8))
    with pytest.raises(SecvitError, match="3-channel"):
        model(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("name,params", [("fastervit_0", 31_404_840), ("fastervit_1", 53_366_696)])
def test_fastervit_baselines(name, params):
    pytest.importorskip("fastervit")
    model = timm.create_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_cli_complexity_json_sec_swin_tiny():
    result = subprocess.run(
        [sys.executable, "-m", "secvit.cli.main", "complexity", "sec_swin_tiny", "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == MEASURED["sec_swin_tiny"][0]
    assert data["gflops"] == pytest.approx(MEASURED["sec_swin_tiny"][1], abs=0.002)
    assert data["gflops_no_attn"] == pytest.approx(MEASURED["sec_swin_tiny"][2], abs=0.002)
