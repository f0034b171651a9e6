"""Semantic Equitable Clustering attention: reference vs batched, padding policy, released algorithm."""

import math

import pytest
import torch

from secvit.models.seca import SECA, RotaryEmbedding2d, cluster_sizes, seca_batched, seca_reference, semantic_order


def qkv(n: int, heads: int = 2, d: int = 8, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


def released_seca(q, k, v, clusters):
    """The released algorithm (divisible sizes only): sort, reshape into equal chunks, attend, restore."""
    order = semantic_order(k)
    idx = order.unsqueeze(-1).expand_as(q)
    qs, ks, vs = (t.gather(2, idx) for t in (q, k, v))
    b, h, n, d = q.shape
    qs, ks, vs = (t.reshape(b, h, clusters, n // clusters, d) for t in (qs, ks, vs))
    out = (torch.softmax(qs @ ks.transpose(-1, -2), -1) @ vs).reshape(b, h, n, d)
    return torch.empty_like(out).scatter_(2, idx, out)


@pytest.mark.parametrize("n,c", [(3136, 32), (784, 8), (196, 2), (64, 4)])
def test_divisible_sizes_match_released_algorithm(n, c):
    q, k, v = qkv(n)
    expected = released_seca(q, k, v, c)
    torch.testing.assert_close(seca_reference(q, k, v, c), expected)
    torch.testing.assert_close(seca_batched(q, k, v, c), expected)


@pytest.mark.parametrize("n,c", [(66800, 32), (10, 4), (97, 8), (33, 32), (5, 2)])
def test_cluster_sizes_are_equitable(n, c):
    sizes = cluster_sizes(n, c)
    assert len(sizes) == c and sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)
    assert max(sizes) == math.ceil(n / c)


def test_too_few_tokens_for_clusters():
    with pytest.raises(ValueError, match="cannot fill"):
        cluster_sizes(3, 4)


@pytest.mark.parametrize("n,c", [(97, 8), (10, 4), (210, 32), (33, 32), (49, 2)])
def test_batched_matches_reference_on_non_divisible_sizes(n, c):
    q, k, v = qkv(n)
    torch.testing.assert_close(seca_batched(q, k, v, c), seca_reference(q, k, v, c))


@pytest.mark.parametrize("fill", [1e4, -1e4, 123.0])
def test_real_tokens_do_not_depend_on_padding(fill):
    q, k, v = qkv(97)
    base = seca_batched(q, k, v, 8, pad_fill=0.0)
    torch.testing.assert_close(seca_batched(q, k, v, 8, pad_fill=fill), base, rtol=0, atol=0)
    assert torch.isfinite(base).all()


def test_every_token_attends_only_within_its_cluster():
    """Perturbing a token's value changes exactly the outputs of its own cluster."""
    n, c = 97, 8
    q, k, v = qkv(n, batch=1, heads=1)
    order = semantic_order(k)[0, 0]
    sizes = cluster_sizes(n, c)
    clusters = torch.empty(n, dtype=torch.long)
    clusters[order] = torch.repeat_interleave(torch.arange(c), torch.tensor(sizes))
    base = seca_batched(q, k, v, c)
    for token in (0, int(order[-1]), int(order[sizes[0]])):
        v2 = v.clone()
        v2[0, 0, token] += 10.0
        changed = (seca_batched(q, k, v2, c) - base).abs().amax(-1)[0, 0] > 1e-9
        assert torch.equal(changed, clusters == clusters[token])


def test_global_attention_when_one_cluster():
    q, k, v = qkv(49)
    expected = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    torch.testing.assert_close(seca_batched(q, k, v, 1), expected)
    torch.testing.assert_close(seca_reference(q, k, v, 1), expected)


def test_module_reference_and_batched_paths_agree_at_odd_sizes():
    torch.manual_seed(0)
    fast = SECA(32, 2, 8).double()
    ref = SECA(32, 2, 8, reference=True).double()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 32, 13, 17, dtype=torch.float64)
    rope = RotaryEmbedding2d(16).double()(13, 17)
    torch.testing.assert_close(fast(x, rope), ref(x, rope))


def test_cluster_assignment_matches_sizes():
    torch.manual_seed(0)
    attn = SECA(32, 2, 8)
    x = torch.randn(1, 32, 10, 11)
    labels = attn.cluster_assignment(x, RotaryEmbedding2d(16)(10, 11))
    assert labels.shape == (1, 2, 10, 11)
    counts = torch.bincount(labels[0, 0].flatten(), minlength=8).tolist()
    assert counts == cluster_sizes(110, 8)
