"""Speed kernels of the SecViT models, behind one switch, each with its plain-torch path beside it.

The model files (:mod:`secvit.models.seca`, :mod:`secvit.models.secvit`) read as the paper and call
the functions of this module where a faster way to compute the same thing exists on some
hardware. Each function computes what its plain path computes (same values up to float rounding,
same gradients) and says where and by how much it is faster (figures in docs/benchmarks.md).

The switch
----------
``SECVIT_FAST_KERNELS=0`` in the environment, or :func:`set_enabled` ``(False)`` (or the
:func:`enabled_as` context manager) in a process, turns every fast path off: the models then run
only the plain torch code of each function below (SDPA for attention, ``F.linear``,
``F.conv2d``, ``argsort``, the whole batch at once). Default: on.

On CPUs the attention kernel is chosen by the host (:func:`cpu_attention`); :func:`use_cpu_attention`
chooses it instead, for tests and benchmarks of both.

Fast paths
----------
* :func:`stable_argsort`: CPU eager sort of the semantic scores by numpy (2-5x ``torch.sort``).
* :func:`attend`: on CPUs, the host's faster attention kernel (SDPA's flash kernel on AVX-512 with
  AMX in float32; elsewhere chunked matmuls without gradients, plain matmuls with them).
* :func:`pointwise_linear`: CPU inference 1x1 projections as one oneDNN call with bias and GELU.
* :func:`depthwise_conv`: the 5x5 LCE convolution in float32 under CPU bf16 autocast when training.
* :func:`depthwise_residual`: ``x + dwconv(x)`` as one convolution with the centre tap raised by one.
* :func:`cache_block`: CPU inference runs a stage's blocks on batch chunks that fit the cache.
* :func:`in_place_ok`: inference rotates q and k in place (seca's ``rotate_packed``).

Private torch APIs
------------------
Every private torch API used by the project is wrapped here, once, with a fallback that keeps
results right when a torch release removes it (the fast path then turns itself off):

* ``torch.cpu._is_amx_tile_supported`` (:data:`CPU_FLASH`; fallback: no AMX, chunked matmuls);
* ``torch.ops.aten._softmax.out`` (in-place row softmax in :func:`_attend_in_chunks`; fallback:
  ``softmax`` and a copy);
* ``torch.ops.mkldnn._linear_pointwise`` (:func:`pointwise_linear`; fallback: ``F.linear``);
* ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` (fallback: no bf16 oneDNN linear);
* ``torch.fx._symbolic_trace.is_fx_symbolic_tracing`` (:func:`cache_block`; fallback: never split).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CACHE_BLOCK_BYTES", "ENV", "attend", "cache_block", "cpu_attention", "depthwise_conv", "depthwise_residual",
    "enabled", "enabled_as", "in_place_ok", "pointwise_linear", "records_grad", "set_enabled", "stable_argsort",
    "use_cpu_attention",
]

ENV = "SECVIT_FAST_KERNELS"
_enabled = os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def enabled() -> bool:
    """Whether the fast paths run (``SECVIT_FAST_KERNELS``, :func:`set_enabled`)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Turn every fast path on or off in this process."""
    global _enabled
    _enabled = bool(on)


@contextlib.contextmanager
def enabled_as(on: bool) -> Iterator[None]:
    """The fast paths on or off inside the block, as before after it."""
    before = _enabled
    set_enabled(on)
    try:
        yield
    finally:
        set_enabled(before)


def records_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd records an op on ``tensors`` (several fast paths run only when it does not)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _eager_cpu(x: Tensor) -> bool:
    """A fast path may run: switched on, a CPU tensor, not under ``torch.jit`` tracing or dynamo."""
    return _enabled and x.device.type == "cpu" and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


# ---------------------------------------------------------------------------- private torch APIs


def _private(get: Callable[[], object], fallback: object) -> object:
    try:
        return get()
    except (AttributeError, RuntimeError):
        return fallback


_ONEDNN_LINEAR = _private(lambda: torch.ops.mkldnn._linear_pointwise, None)
_SOFTMAX_OUT = _private(lambda: torch.ops.aten._softmax.out, None)
_ONEDNN_BF16 = bool(
    _ONEDNN_LINEAR is not None
    and torch.backends.mkldnn.is_available()
    and _private(lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported(), False)
)
_AMX = bool(_private(lambda: torch.cpu._is_amx_tile_supported(), False))
_FX_TRACING = _private(lambda: torch.fx._symbolic_trace.is_fx_symbolic_tracing, None)


# ---------------------------------------------------------------------------- semantic order


def stable_argsort(score: Tensor) -> Tensor:
    """``score.argsort(dim=-1, stable=True)``: ascending, equal scores in token order.

    Fast path, CPU eager mode, float32 and narrower scores: numpy sorts one unique int64 key per
    token, the score's bits mapped to an order-preserving int32 (``-0.0`` counted as ``0.0``), then
    the token index. Same order (scores are not NaN), and 2-5x faster than ``torch.sort`` at
    SecViT-S's shapes (numpy sorts int64 with AVX-512 where the CPU has it).
    """
    if not _eager_cpu(score) or score.dtype == torch.float64:
        return score.argsort(dim=-1, stable=True)
    bits = (score.detach().float() + 0.0).numpy().view(np.int32)  # + 0.0: a new contiguous array, -0.0 -> 0.0
    key = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64) << 32  # negatives: larger magnitude, smaller key
    key |= np.arange(score.shape[-1], dtype=np.int64)
    key.sort(axis=-1)
    return torch.from_numpy(key & 0xFFFFFFFF)


# ---------------------------------------------------------------------------- attention

# CPU attention kernel, measured at SecViT-S's stage shapes with 2 threads (docs/benchmarks.md): on
# the AMD EPYC host (native bf16, so AVX-512 as on Zen 4, no AMX) chunked matmuls beat torch's CPU
# flash-attention kernel (inference 1.2-1.6x, forward+backward 1.3-1.9x); on the Xeon with AVX-512
# and AMX the flash kernel wins (forward+backward 1.2-2.0x, inference 1.0-1.2x) and, allocating no
# score matrices, keeps forward+backward free of page faults; in bfloat16 it is no faster in
# inference and its backward is 5x slower than the matmuls' (same host). AVX-512 alone does not tell
# the two hosts apart; AMX does (as a mark of the Xeon's full-width AVX-512 units), and a host with
# neither measurement keeps the matmuls.
CPU_FLASH = torch.backends.cpu.get_cpu_capability().startswith("AVX512") and _AMX
_cpu_attention = "sdpa" if CPU_FLASH else "matmul"


def cpu_attention() -> str:
    """The CPU attention kernel in use for float32: ``"sdpa"`` (the flash kernel) or ``"matmul"``."""
    return _cpu_attention


@contextlib.contextmanager
def use_cpu_attention(kernel: str) -> Iterator[None]:
    """Inside the block, CPU attention in float32 uses ``kernel`` (``"sdpa"`` or ``"matmul"``), not the host's choice."""
    global _cpu_attention
    if kernel not in ("sdpa", "matmul"):
        raise ValueError(f"CPU attention kernel must be 'sdpa' or 'matmul', got {kernel!r}")
    before, _cpu_attention = _cpu_attention, kernel
    try:
        yield
    finally:
        _cpu_attention = before


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T) v with keys already scaled (the released model scales k by d^-0.5).

    ``q, k, v``: (B, G, L, d); ``mask``: boolean, broadcastable to (G, L, L), True where a key may
    be attended. Plain path (GPUs, fast paths off, ``torch.jit`` tracing, which FLOP counters such
    as fvcore leave out as the paper's FLOP convention does): ``scaled_dot_product_attention``.
    Fast path on CPUs, by :func:`cpu_attention`: SDPA's flash kernel in float32 on hosts with
    AVX-512 and AMX; otherwise :func:`_attend_in_chunks` without gradients, plain matmuls with them.
    """
    if not _eager_cpu(q) or (_cpu_attention == "sdpa" and q.dtype == torch.float32):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    if not records_grad(q, k, v):
        return _attend_in_chunks(q, k, v, mask)
    scores = q @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


_CHUNK_SCORES = 640_000  # attention scores per chunk: 2.5 MB in fp32 (66 clusters of 98 tokens; best of 4-64 measured)


def _softmax_rows_(scores: Tensor) -> Tensor:
    """Row softmax of ``scores`` written into ``scores``."""
    if _SOFTMAX_OUT is not None:
        return _SOFTMAX_OUT(scores, -1, False, out=scores)  # row by row, safe in place
    return scores.copy_(scores.softmax(dim=-1))


def _attend_in_chunks(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """:func:`attend` as batched matmuls and an in-place softmax over chunks of (sample, group)
    pairs whose scores stay in cache. At SecViT-S's stage shapes on the EPYC host (batch 8,
    2 threads) 1.2-1.6x faster than the CPU flash-attention kernel, whose 32-query blocks
    fit 98-token clusters badly."""
    bsz, groups, length, dim = q.shape
    if mask is None and bsz * groups * length * length <= _CHUNK_SCORES:  # one chunk: matmuls on the views, no copies
        return (q @ k.transpose(-1, -2)).softmax(dim=-1) @ v
    q, k, v = (t.reshape(bsz * groups, length, dim) for t in (q, k, v))
    if mask is not None:  # True where masked out; a (G, 1, L) key mask stays one row per group, not L x L
        mask = ~mask.expand(groups, *mask.shape[-2:]).repeat(bsz, 1, 1)
    out = torch.empty_like(q)
    step = max(1, _CHUNK_SCORES // (length * length))
    buffer = q.new_empty(min(step, q.shape[0]), length, length)
    for start in range(0, q.shape[0], step):
        end = min(start + step, q.shape[0])
        scores = buffer[: end - start]
        torch.bmm(q[start:end], k[start:end].transpose(1, 2), out=scores)
        if mask is not None:
            scores.masked_fill_(mask[start:end], float("-inf"))
        _softmax_rows_(scores)
        torch.bmm(scores, v[start:end], out=out[start:end])
    return out.view(bsz, groups, length, dim)


# ---------------------------------------------------------------------------- projections


def _onednn_dtype(x: Tensor, weight: Tensor, bias: Tensor | None) -> torch.dtype | None:
    """The dtype of a oneDNN linear for CPU inference: float32 without autocast, bfloat16 under CPU
    autocast to bfloat16 (where oneDNN supports it); ``None`` (the plain calls) when a gradient is
    recorded, the fast paths are off, or off the CPU."""
    if _ONEDNN_LINEAR is None or not _eager_cpu(x) or records_grad(x, weight, bias):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if _ONEDNN_BF16 and torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.float32 if x.dtype == weight.dtype == torch.float32 else None


def pointwise_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor:
    """``F.linear(x, weight, bias)``, followed by exact (erf) GELU when ``gelu``.

    Fast path, CPU inference (see :func:`_onednn_dtype`): one oneDNN matmul (the kernel inductor
    uses for these patterns) with the bias, and the GELU, applied as it writes the output; under
    bfloat16 autocast on bfloat16 copies of input, weight and bias, as autocast's linear would, with
    the bfloat16 output autocast's linear and GELU give. At SecViT-S's shapes (2 threads): fp32
    1.1-1.4x faster than ``F.linear`` (whose ``addmm`` first copies the bias into the whole output),
    and about 2x faster than linear then GELU.
    """
    dtype = _onednn_dtype(x, weight, bias)
    if dtype is not None:
        bias = bias.to(dtype) if bias is not None else None
        return _ONEDNN_LINEAR(x.to(dtype), weight.to(dtype), bias, "gelu" if gelu else "none", [], "none")
    x = F.linear(x, weight, bias)
    return F.gelu(x) if gelu else x


# ---------------------------------------------------------------------------- depthwise convolutions


def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``dwconv(x)`` for NCHW-shaped ``x`` and a depthwise (C, 1, k, k) ``weight``.

    Fast path: under CPU autocast, when a gradient is recorded, a 5x5 kernel runs in float32 (output
    in ``x``'s dtype): oneDNN's bfloat16 weight gradient of a 5x5 depthwise convolution is 3.5x
    slower than its float32 one (28.8 vs 8.0 ms at SecViT-S's stage 1, 2 threads), and float32 is no
    slower forward and for the input gradient either; 3x3 kernels are faster in bfloat16.
    """
    padding = weight.shape[-1] // 2
    if weight.shape[-1] == 5 and _eager_cpu(x) and torch.is_autocast_enabled("cpu") and records_grad(x, weight, bias):
        with torch.autocast("cpu", enabled=False):
            bias = None if bias is None else bias.float()
            return F.conv2d(x.float(), weight.float(), bias, padding=padding, groups=weight.shape[0]).to(x.dtype)
    return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])


def depthwise_residual(x: Tensor, weight: Tensor, bias: Tensor | None, identity: Tensor) -> Tensor:
    """``x + dwconv(x)`` for NCHW-shaped ``x`` and a depthwise (C, 1, k, k) ``weight``.

    Fast path: one convolution whose centre tap is increased by one (``identity``), so there is no
    separate addition pass over the map. Under autocast the convolution runs in low precision (but
    see :func:`depthwise_conv` for 5x5 kernels): a float32 ``x`` is added in float32 after it; a
    low-precision ``x`` (the model's case, the output of an autocast linear) goes through the one
    convolution too, whose centre tap ``1 + w`` rounded to bfloat16 errs by as much as rounding
    ``x + conv(x)`` to bfloat16 would (SecViT-S, bf16, 2 threads: 2.1 -> 1.4 ms per call at stage 1).
    """
    if not _enabled or (torch.is_autocast_enabled(x.device.type) and x.dtype == torch.float32):
        return x + depthwise_conv(x, weight, bias)
    return depthwise_conv(x, weight + identity, bias)


# ---------------------------------------------------------------------------- batch chunks, in-place rotation

#: Budget of :func:`cache_block`: the widest activation (3x the width) per batch chunk, within the
#: 32 MB L3 of the AMD EPYC host.
CACHE_BLOCK_BYTES = 10 * 2**20


def cache_block(x: Tensor) -> int:
    """Images per chunk for a stage's blocks on the channels-last map ``x``, 0 for the whole batch at once.

    Fast path, CPU inference: the blocks run on chunks of the batch whose widest activations (the qkv
    projection and the FFN's hidden map, 3x the width) stay within :data:`CACHE_BLOCK_BYTES`. The
    results are the same (every op of a block is per image), and the memory-bound ops (row gathers,
    depthwise convs, K=64 matmuls) read from cache instead of memory. SecViT-S at 224x224, batch 8,
    2 threads: stage 1 (4 images per chunk) 1.2-1.6x faster; stages that fit are not split
    (splitting them measured slower). Never under ``torch.fx`` tracing (graphs stay unsplit).
    """
    if _FX_TRACING is None or _FX_TRACING() or torch.is_grad_enabled() or not _eager_cpu(x):
        return 0
    bsz, height, width, dim = x.shape
    step = max(1, CACHE_BLOCK_BYTES // (height * width * 3 * dim * x.element_size()))
    return step if step < bsz else 0


def in_place_ok(x: Tensor) -> bool:
    """Whether ``x`` may be overwritten by the op that reads it (fast paths on, no gradient recorded,
    contiguous): inference rotates q and k of the projection in place instead of building a new tensor."""
    return _enabled and not records_grad(x) and x.is_contiguous()
