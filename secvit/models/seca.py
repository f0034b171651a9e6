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
in exactly one cluster. When ``c`` divides ``N`` this is exactly the released
algorithm. Every cluster must hold at least one real token (``N >= c``).

Two implementations with identical results (same clusters, same outputs and
gradients up to float rounding):

* :func:`seca_reference` follows the paper step by step, one cluster at a time,
  with no padding at all. It is the definition.
* :func:`seca_fast` is what the model runs. It takes the packed q/k/v projection
  in token layout ``(B, N, 3, heads, d)`` and moves every row once: one
  ``index_select`` puts q, k and v of every (sample, head, cluster) into
  ``(3, B, heads*clusters, L, d)`` (clusters folded into the batch, so attention
  runs on 4-D tensors through the fused kernels), and one more puts the results
  back into token layout ``(B, N, heads*d)``, ready for the output projection.
  Both moves are permutations of rows whose backward is the inverse permutation
  (a gather, not a scatter-add). When clusters do not divide the tokens, short
  clusters get one padding slot that is masked out as a key and dropped as a
  query, so padding never affects real tokens.

Hardware-specific speed paths (the CPU sort, attention kernels, oneDNN projections, depthwise
convolution rules) live in :mod:`secvit.models.kernels`, behind one switch; this file holds the
maths, in the paper's order: cluster sizes, semantic order, the reference, the packed fast
layout, and the modules.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import Tensor, nn

from secvit.models.kernels import attend, depthwise_conv, depthwise_residual, in_place_ok, pointwise_linear, records_grad, stable_argsort

# torch.fx: the kernels branch on device, dtype and grad mode; symbolic tracing records each as one call
torch.fx.wrap("pointwise_linear")
torch.fx.wrap("depthwise_conv")
torch.fx.wrap("depthwise_residual")


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

    The scores are computed and sorted in at least float32 whatever the keys' dtype (autocast gives bf16
    keys; float64 keys stay float64): a bf16 score has 8 significant bits, so at stage 1 thousands of tokens tie and fall
    back to raster order, and clusters partly become spatial blocks. The release sorted fp16 scores
    under AMP (11 bits); float32 keeps the order of the keys' values.
    """
    with torch.autocast(k.device.type, enabled=False):
        k = k.to(torch.promote_types(k.dtype, torch.float32))
        # cos(centre, k_i) = (centre . k_i) / (|centre| |k_i|); |centre| > 0 is the same for all
        # tokens of a (sample, head), so it does not change the order and is left out, and
        # only the N scores are divided, not the N x d keys (F.normalize's eps kept for |k_i|)
        centre = k.mean(dim=2, keepdim=True)
        score = torch.linalg.vecdot(k, centre, dim=-1) / k.norm(dim=-1).clamp_min(1e-12)  # (B, heads, N)
    return stable_argsort(score)


def _gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, h, index[b, h, i]]`` for (B, heads, N, d) tensors."""
    return x.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


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


def unpack_qkv(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, heads, N, d) views of q, k, v in a packed (B, N, 3, heads, d) tensor."""
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


class _RowPermutation(torch.autograd.Function):
    """``x.index_select(0, index)`` for a permutation of rows; backward selects with the inverse."""

    @staticmethod
    def forward(x: Tensor, index: Tensor, inverse: Tensor) -> Tensor:
        return x.index_select(0, index)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def _select_rows(x: Tensor, index: Tensor, permutation: bool) -> Tensor:
    """Rows ``index`` of the 2-D ``x``. When ``index`` is a ``permutation`` and a gradient is
    recorded, the backward selects rows with the inverse permutation (cheaper than
    ``index_add`` into zeros). Otherwise the plain call, and no inverse is computed:
    ``autograd.Function.apply`` costs about 0.1 ms per call in Python (it inspects the
    signature), more than the select at small sizes.
    """
    if permutation and records_grad(x):
        return _RowPermutation.apply(x, index, _inverse(index))
    return x.index_select(0, index)


def _inverse(index: Tensor) -> Tensor:
    return torch.empty_like(index).scatter_(0, index, torch.arange(index.numel(), device=index.device))


def _slots(num_tokens: int, num_clusters: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """Padded (clusters x L) layout of the ordered tokens.

    Returns ``source`` (clusters*L,): the ordered token shown in each slot (padding
    slots repeat the cluster's last token); ``position`` (N,): the slot of each
    ordered token; and the key mask (clusters, 1, L), True for real keys, or None
    when clusters divide the tokens (then both maps are the identity).
    """
    sizes = cluster_sizes(num_tokens, num_clusters)
    size = sizes[0]
    if sizes[-1] == size:
        ident = torch.arange(num_tokens, device=device)
        return ident, ident, None
    starts = [sum(sizes[:i]) for i in range(num_clusters)]
    source = [start + min(j, s - 1) for start, s in zip(starts, sizes) for j in range(size)]
    position = [c * size + j for c, s in enumerate(sizes) for j in range(s)]
    mask = [[j < s for j in range(size)] for s in sizes]
    return (
        torch.tensor(source, device=device),
        torch.tensor(position, device=device),
        torch.tensor(mask, device=device).unsqueeze(1),
    )


def seca_fast(qkv: Tensor, num_clusters: int) -> Tensor:
    """SECA on the packed projection ``qkv`` (B, N, 3, heads, d), k already scaled.

    Returns (B, N, heads*d). Same clusters and results as :func:`seca_reference`
    applied to :func:`unpack_qkv` of the same tensor.
    """
    bsz, num_tokens, _, heads, dim = qkv.shape
    qkv = qkv.contiguous()
    if num_clusters == 1:  # global attention: one call of attend(), which FLOP counts recognise as attention
        out = attend(*unpack_qkv(qkv))
        return out.transpose(1, 2).reshape(bsz, num_tokens, heads * dim)
    device = qkv.device
    with torch.no_grad():  # the order is not differentiated: no graph for the scores
        order = semantic_order(unpack_qkv(qkv)[1])  # (B, heads, N)
    source, position, mask = _slots(num_tokens, num_clusters, device)
    slots = source.numel()
    size = slots // num_clusters
    tokens = order if mask is None else order.index_select(2, source)  # (B, heads, slots)

    # rows of qkv: ((b*N + token)*3 + s)*heads + head; gathered into (3, B, heads, slots)
    b = torch.arange(bsz, device=device).view(1, bsz, 1, 1) * (num_tokens * 3 * heads)
    s = torch.arange(3, device=device).view(3, 1, 1, 1) * heads
    h = torch.arange(heads, device=device).view(1, 1, heads, 1)
    index = (b + tokens.unsqueeze(0) * (3 * heads) + s + h).flatten()
    packed = _select_rows(qkv.view(-1, dim), index, permutation=mask is None).view(3, bsz, heads * num_clusters, size, dim)
    if mask is not None:
        mask = mask.repeat(heads, 1, 1)  # (heads*clusters, 1, L)
    out = attend(*packed.unbind(0), mask)  # (B, heads*clusters, L, d); unbind: one stacked gradient, not three zero-filled ones

    # back to token layout: row (b*N + token)*heads + head <- row (b*heads + head)*slots + slot
    offset = torch.arange(bsz * heads, device=device).view(bsz, heads, 1)
    rank = _inverse((order + offset * num_tokens).flatten()).view(bsz, heads, num_tokens) - offset * num_tokens
    if mask is not None:
        rank = position[rank]
    back = rank + offset * slots  # (B, heads, N): slot of each token
    back = back.transpose(1, 2).flatten()
    return _select_rows(out.reshape(-1, dim), back, permutation=mask is None).view(bsz, num_tokens, heads * dim)


torch.fx.wrap("seca_fast")


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

    def qkv_tables(self, height: int, width: int, scale: float) -> Tensor:
        """The table that rotates q and rotates and scales k, for :func:`rotate_packed`:
        (N, 2, 1, d/2), complex, ``cos + i sin`` per channel pair (times ``scale`` for k)."""
        sin, cos = self(height, width)
        turn = torch.complex(cos[:, 0::2], sin[:, 0::2])
        return torch.stack([turn, turn * scale], dim=1).unsqueeze(2)


def rotate_packed(qkv: Tensor, tables: Tensor, reuse: bool = False) -> Tensor:
    """(rot(q), rot(k) * scale, v) of a packed (B, N, 3, heads, d) projection, as a new
    contiguous tensor; ``tables`` from :meth:`RotaryEmbedding2d.qkv_tables`.

    One complex multiplication per channel pair, in at least fp32: bf16 (autocast) is
    rotated in fp32 and rounded once (1.5x faster on CPU than the real formula in bf16, whose
    pair swap is a copy). ``reuse=True`` lets it rotate ``qkv`` in place and return it when no
    gradient is recorded and ``qkv`` is contiguous (inference: no new tensor, no copy of v).
    """
    qk, v = qkv[:, :, :2], qkv[:, :, 2:]
    wide = torch.promote_types(qkv.dtype, torch.float32)
    if reuse and in_place_ok(qkv):
        # inference: rotate q and k in place (no concatenation with v, no new tensor)
        work = qk if qkv.dtype == wide else qk.to(wide)
        torch.view_as_complex(work.unflatten(-1, (-1, 2))).mul_(tables)
        if work is not qk:
            qk.copy_(work)
        return qkv
    pairs = torch.view_as_complex(qk.to(wide).unflatten(-1, (-1, 2)))
    rotated = torch.view_as_real(pairs * tables).flatten(-2)
    return torch.cat([rotated.to(v.dtype), v], dim=2)


torch.fx.wrap("rotate_packed")


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (the released parameter layout, weight (out, in, 1, 1)) applied as a
    linear map to channels-last tensors (..., in) -> (..., out); ``gelu=True`` applies exact GELU after it."""

    def __init__(self, in_dim: int, out_dim: int, gelu: bool = False) -> None:
        super().__init__(in_dim, out_dim, 1)
        self.gelu = gelu

    def forward(self, x: Tensor) -> Tensor:
        return pointwise_linear(x, self.weight.flatten(1), self.bias, self.gelu)


class DepthwiseConv(nn.Conv2d):
    """A depthwise k x k convolution with bias on channels-last tensors (B, H, W, C).

    ``residual=True``: ``x + conv(x)`` (see :func:`depthwise_residual`; same parameters).
    """

    def __init__(self, dim: int, kernel: int, residual: bool = False) -> None:
        super().__init__(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.residual = residual
        if residual:
            identity = torch.zeros(1, 1, kernel, kernel)
            identity[..., kernel // 2, kernel // 2] = 1.0
            self.register_buffer("identity", identity, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2)
        x = depthwise_residual(x, self.weight, self.bias, self.identity) if self.residual else depthwise_conv(x, self.weight, self.bias)
        return x.permute(0, 2, 3, 1)


class RotaryAttention(nn.Module):
    """The frame of SECA and of the attentions that table 6 puts in its place, on channels-last
    maps (B, H, W, C): out = proj(mix(q, k, v) + lce(v)), with 2-D rotary embedding on q and k
    and a 5x5 depthwise "local context enhancement" (LCE) on v; ``lce=False`` (table 6's
    "w/o LCE" ablation) leaves it out. Subclasses define the token mixing, :meth:`mix_tokens`.
    """

    def __init__(self, dim: int, num_heads: int, lce: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = PointwiseConv(dim, dim * 3)
        self.lce = DepthwiseConv(dim, 5) if lce else None
        self.proj = PointwiseConv(dim, dim)

    def _packed(self, x: Tensor, tables: Tensor) -> tuple[Tensor, Tensor]:
        """Projection ``(B, H, W, 3C)`` and the rotated, scaled packed q/k/v ``(B, N, 3, heads, d)``
        (without gradients these share memory: q and k of the projection are rotated in place)."""
        bsz, height, width, dim = x.shape
        qkv = self.qkv(x)
        packed = qkv.view(bsz, height * width, 3, self.num_heads, self.head_dim)
        return qkv, rotate_packed(packed, tables, reuse=True)  # v of qkv stays as it is

    def mix_tokens(self, packed: Tensor, height: int, width: int) -> Tensor:
        """Attention of the packed q/k/v ``(B, N, 3, heads, d)``, k scaled: B*N*C values, token-major, heads in order."""
        raise NotImplementedError

    def forward(self, x: Tensor, tables: Tensor) -> Tensor:
        """``tables``: :meth:`RotaryEmbedding2d.qkv_tables` for this map and head dim."""
        bsz, height, width, dim = x.shape
        qkv, packed = self._packed(x, tables)
        out = self.mix_tokens(packed, height, width).reshape(bsz, height, width, dim)
        if self.lce is not None:
            out = out + self.lce(qkv[..., 2 * dim :])
        return self.proj(out)


class SECA(RotaryAttention):
    """Semantic Equitable Clustering self-attention (:class:`RotaryAttention` mixing tokens within
    ``num_clusters`` equal clusters of semantically ordered tokens); ``reference`` selects the readable path."""

    def __init__(self, dim: int, num_heads: int, num_clusters: int, reference: bool = False, lce: bool = True) -> None:
        super().__init__(dim, num_heads, lce)
        self.num_clusters = num_clusters
        self.reference = reference

    def mix_tokens(self, packed: Tensor, height: int, width: int) -> Tensor:
        if self.reference:
            return seca_reference(*unpack_qkv(packed), self.num_clusters).transpose(1, 2)
        return seca_fast(packed, self.num_clusters)

    def cluster_assignment(self, x: Tensor, tables: Tensor) -> Tensor:
        """Cluster index of every token, per head: (B, heads, H, W). For visualisation."""
        bsz, height, width, _ = x.shape
        order = semantic_order(unpack_qkv(self._packed(x, tables)[1])[1])
        sizes = torch.tensor(cluster_sizes(height * width, self.num_clusters), device=x.device)
        labels_in_order = torch.repeat_interleave(torch.arange(self.num_clusters, device=x.device), sizes)
        labels = torch.empty_like(order)
        labels.scatter_(2, order, labels_in_order.expand_as(order))
        return labels.reshape(bsz, self.num_heads, height, width)


# torch.fx: the reference path's cluster sizes depend on the token count (Python control flow on
# shapes), so symbolic tracing records it as one opaque call instead of tracing into it.
torch.fx.wrap("seca_reference")
