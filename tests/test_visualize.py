"""Cluster maps (paper figure 4) come from forward_intermediates plus pre-hooks on the first blocks."""

import pytest
import timm
import torch

from secvit.errors import SecvitError
from secvit.visualize import cluster_maps


def _by_hand(model, x, head):
    """The clustering input rebuilt step by step: stem, each stage's tokens, the first block's assignment."""
    maps = []
    x = model.stem(x)
    for i, stage in enumerate(model.stages):
        x, tables = stage.tokens(x)
        if model.clusters[i] > 1:
            maps.append((i, model.clusters[i], stage.blocks[0].cluster_assignment(x, tables)[0, head]))
        for block in stage.blocks:
            x = block(x, tables)
        x = x.permute(0, 3, 1, 2)
    return maps


@pytest.mark.parametrize("head", [0, 1])
def test_cluster_maps_match_manual_computation(head):
    torch.manual_seed(0)
    model = timm.create_model("secvit_tiny").double().eval()
    x = torch.randn(1, 3, 72, 56, dtype=torch.float64)  # stage 1: 18x14 tokens, not divisible by 32
    maps = cluster_maps(model, x, head)
    with torch.no_grad():
        want = _by_hand(model, x, head)
    assert [(i, c) for i, c, _ in maps] == [(0, 32), (1, 8), (2, 2)]
    for (_, _, got), (_, _, expected) in zip(maps, want):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert maps[0][2].shape == (18, 14) and set(maps[0][2].unique().tolist()) == set(range(32))
    for stage in model.stages:  # hooks are removed afterwards
        assert not stage.blocks[0]._forward_pre_hooks


def test_cluster_maps_head_out_of_range():
    model = timm.create_model("secvit_tiny").eval()
    with pytest.raises(SecvitError, match="--head 2 is out of range: stage 1 has 2 heads"):
        cluster_maps(model, torch.randn(1, 3, 64, 64), head=2)


def test_cluster_maps_all_global():
    model = timm.create_model("secvit_tiny", clusters=(1, 1, 1, 1)).eval()
    assert cluster_maps(model, torch.randn(1, 3, 64, 64)) == []
