"""Semantic Equitable Clustering attention (SECA), paper section 3.2.

Per sample and per head, the keys are scored by their cosine similarity to the
mean key (the "global token"), the tokens are ordered by that score (ascending, as
in the released code; the paper text says descending, which only reverses the
cluster order), the ordered sequence is cut into ``num_clusters`` contiguous
clusters of (almost) equal size, and softmax attention runs inside each cluster.
Results are scattered back to the original token order. ``num_clusters == 1``
is plain global attention.

Cluster sizes and padding
-------------------------
The released model requires ``H*W % num_clusters == 0`` (true at 224x224, false at
detection sizes such as 800x1333). Here every size works: with ``N`` tokens and
``c`` clusters, ``L = ceil(N / c)`` and ``p = c*L - N``; the first ``c - p``
clusters of the ordered sequence hold ``L`` tokens and the last ``p`` clusters
hold ``L - 1``, so cluster sizes differ by at most one and every real token lands
in exactly one cluster. The batched path appends one padding slot to each short
cluster; padding slots are masked out as keys (they never receive attention
weight) and their outputs are dropped, so results for real tokens do not depend
on what the padding holds. When ``c`` divides ``N`` this is exactly the released
algorithm. Every cluster must hold at least one real token (``N >= c``).

Two implementations with identical results:

* :func:`seca_reference` follows the paper step by step, one cluster at a time,
  with no padding at all. It is the definition.
* :func:`seca_batched` pads and masks as above and runs all clusters as one
  batched ``scaled_dot_product_attention`` call (fused kernels on GPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cluster_sizes(num_tokens: int, num_clusters: int) -> list[int]:
    """Sizes of the ``num_clusters`` clusters of an ordered sequence of ``num_tokens``."""
    if num_tokens < num_clusters:
        raise ValueError(f"{num_tokens} tokens cannot fill {num_clusters} clusters")
    size = math.ceil(num_tokens / num_clusters)
    short = num_clusters * size - num_tokens
    return [size] * (num_clusters - short) + [size - 1] * short


def semantic_order(k: Tensor) -> Tensor:
    """Token order by cosine similarity to the mean key, ascending.

    ``k``: (B, heads, N, d). Returns indices (B, heads, N).
    """
    centre = F.normalize(k.mean(dim=2, keepdim=True), dim=-1)
    score = centre @ F.normalize(k, dim=-1).transpose(-1, -2)  # (B, heads, 1, N)
    return score.squeeze(2).argsort(dim=-1)


def _gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, h, index[b, h, i]]`` for (B, heads, N, d) tensors."""
    return x.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T) v with keys already scaled (the released model scales k by d^-0.5)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def seca_reference(q: Tensor, k: Tensor, v: Tensor, num_clusters: int) -> Tensor:
    """SECA as written in the paper: order, split, attend per cluster, restore order.

    ``q, k, v``: (B, heads, N, d) with ``k`` already scaled. Returns (B, heads, N, d).
    """
    if num_clusters == 1:
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return attn @ v
    order = semantic_order(k)
    sizes = cluster_sizes(q.shape[2], num_clusters)
    chunks = zip(*(_gather_tokens(t, order).split(sizes, dim=2) for t in (q, k, v)))
    out = torch.cat([torch.softmax(qc @ kc.transpose(-1, -2), dim=-1) @ vc for qc, kc, vc in chunks], dim=2)
    return _gather_tokens(out, order.argsort(dim=-1))


def _padded_slots(num_tokens: int, num_clusters: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """Slot of each ordered token in the padded (clusters x L) layout, and the key mask.

    Returns ``slots`` (N,) and a boolean mask (clusters, 1, L) that is True for real
    keys, or None when no padding is needed.
    """
    sizes = cluster_sizes(num_tokens, num_clusters)
    size = sizes[0]
    if all(s == size for s in sizes):
        return torch.arange(num_tokens, device=device), None
    real = torch.tensor(sizes, device=device)
    valid = torch.arange(size, device=device).unsqueeze(0) < real.unsqueeze(1)  # (clusters, L)
    slots = valid.flatten().nonzero().squeeze(1)
    return slots, valid.unsqueeze(1)


def seca_batched(q: Tensor, k: Tensor, v: Tensor, num_clusters: int, pad_fill: float = 0.0) -> Tensor:
    """SECA with all clusters in one batched attention call (same result as the reference).

    ``pad_fill`` is the value written into padding slots; it has no effect on the
    output (kept as an argument so tests can prove that).
    """
    if num_clusters == 1:
        return attend(q, k, v)
    bsz, heads, num_tokens, dim = q.shape
    order = semantic_order(k)
    slots, valid = _padded_slots(num_tokens, num_clusters, q.device)
    size = math.ceil(num_tokens / num_clusters)

    def to_clusters(t: Tensor) -> Tensor:
        t = _gather_tokens(t, order)
        if valid is not None:
            padded = t.new_full((bsz, heads, num_clusters * size, dim), pad_fill)
            padded[:, :, slots] = t
            t = padded
        return t.reshape(bsz, heads, num_clusters, size, dim)

    out = attend(to_clusters(q), to_clusters(k), to_clusters(v), valid)
    out = out.reshape(bsz, heads, num_clusters * size, dim)
    if valid is not None:
        out = out[:, :, slots]
    return _gather_tokens(out, order.argsort(dim=-1))


class RotaryEmbedding2d(nn.Module):
    """2-D rotary position embedding of the released SecViT.

    The first half of each head's channels rotates with the row index, the second
    half with the column index; channels (2i, 2i+1) form a rotation pair.
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"head dim {head_dim} must be divisible by 4 for 2-D rotary embedding")
        angle = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4))
        self.register_buffer("angle", angle.repeat_interleave(2), persistent=False)

    def forward(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """sin and cos tables of shape (H*W, head_dim)."""
        rows = torch.arange(height, device=self.angle.device, dtype=self.angle.dtype)
        cols = torch.arange(width, device=self.angle.device, dtype=self.angle.dtype)
        theta_r = (rows[:, None] * self.angle)[:, None, :].expand(height, width, -1)
        theta_c = (cols[:, None] * self.angle)[None, :, :].expand(height, width, -1)
        theta = torch.cat([theta_r, theta_c], dim=-1).reshape(height * width, -1)
        return theta.sin(), theta.cos()


def apply_rotary(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` (..., N, d) by the given angles."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([-x1, x0], dim=-1).flatten(-2)
    return x * cos + rotated * sin


class SECA(nn.Module):
    """Semantic Equitable Clustering self-attention on NCHW feature maps.

    out = proj(attention(q, k, v) + lce(v)), with 2-D rotary embedding on q and k
    and a 5x5 depthwise "local context enhancement" (LCE) on v.
    """

    def __init__(self, dim: int, num_heads: int, num_clusters: int, reference: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_clusters = num_clusters
        self.reference = reference
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Conv2d(dim, dim * 3, 1)
        self.lce = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        bsz, dim, height, width = x.shape
        qkv = self.qkv(x)
        lce = self.lce(qkv[:, 2 * dim :])
        q, k, v = qkv.reshape(bsz, 3, self.num_heads, self.head_dim, height * width).transpose(-1, -2).unbind(1)
        sin, cos = rope
        q = apply_rotary(q, sin, cos)
        k = apply_rotary(k, sin, cos) * self.scale
        seca = seca_reference if self.reference else seca_batched
        out = seca(q, k, v, self.num_clusters)
        out = out.transpose(-1, -2).reshape(bsz, dim, height, width)
        return self.proj(out + lce)

    def cluster_assignment(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        """Cluster index of every token, per head: (B, heads, H, W). For visualisation."""
        bsz, dim, height, width = x.shape
        k = self.qkv(x)[:, dim : 2 * dim].reshape(bsz, self.num_heads, self.head_dim, height * width)
        k = apply_rotary(k.transpose(-1, -2), *rope)
        order = semantic_order(k)
        sizes = torch.tensor(cluster_sizes(height * width, self.num_clusters), device=x.device)
        labels_in_order = torch.repeat_interleave(torch.arange(self.num_clusters, device=x.device), sizes)
        labels = torch.empty_like(order)
        labels.scatter_(2, order, labels_in_order.expand_as(order))
        return labels.reshape(bsz, self.num_heads, height, width)


# torch.fx: cluster sizes depend on the token count (Python control flow on shapes), so
# symbolic tracing records each clustering step as one opaque call instead of tracing into it.
torch.fx.wrap("seca_reference")
torch.fx.wrap("seca_batched")
