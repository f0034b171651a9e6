"""``secvit bench seca``: the paper's appendix-E SECA code, :func:`seca_reference` and :func:`seca_fast` at the
four SecViT-S stage shapes, forward and forward+backward, checked to agree and then timed round-robin."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from secvit.bench import env_line
from secvit.models.seca import seca_fast, seca_reference, unpack_qkv
from secvit.models.secvit import VARIANTS
from secvit.models.staged import stage_side
from secvit.timing import Progress, median, time_interleaved

__all__ = ["SecaShape", "appendix_e_seca", "bench_seca", "seca_markdown", "seca_shapes"]


def appendix_e_seca(qkv: Tensor, num_heads: int, num_clusters: int) -> Tensor:
    """The paper's appendix-E SECA forward (lines 45-71), from the qkv projection
    (B, 3C, H, W) to the attention output (B, C, H, W): the baseline of ``secvit bench seca``.

    Transcribed as printed, with each einops ``rearrange`` written as the equivalent
    reshape/permute (einops is not a dependency here): the mean of the scaled keys is the centre (``sort_sim(k, k)``),
    the inverse order comes from a second sort, and the released code asserts that the
    clusters divide the tokens. Like the paper's code, it has no rotary embedding; the
    rotation and the key scaling of our model happen in one pass before SECA.
    """
    bsz, _, h, w = qkv.shape
    head_dim = qkv.shape[1] // 3 // num_heads
    assert (h * w) % num_clusters == 0
    # rearrange(qkv, "b (m n d) h w -> m b n (h w) d", m=3, n=num_heads)
    q, k, v = qkv.reshape(bsz, 3, num_heads, head_dim, h * w).permute(1, 0, 2, 4, 3)
    k = k * head_dim**-0.5
    if num_clusters > 1:
        cls_token = F.normalize(k.mean(2, keepdim=True), dim=-1)
        cos_sim = cls_token @ F.normalize(k, dim=-1).transpose(-1, -2)
        indices = torch.argsort(cos_sim, dim=-1).squeeze(2)
        q, k, v = (torch.gather(t, dim=-2, index=indices.unsqueeze(-1).expand_as(t)) for t in (q, k, v))
        # rearrange(t, "b n (c l) d -> b n c l d", c=num_clusters)
        q_l, k_l, v = (t.reshape(bsz, num_heads, num_clusters, -1, head_dim) for t in (q, k, v))
        attn = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
        v = attn @ v
        v = v.reshape(bsz, num_heads, h * w, head_dim)  # "b n c l d -> b n (c l) d"
        v = torch.gather(v, dim=-2, index=indices.sort(dim=-1).indices.unsqueeze(-1).expand_as(v))
    else:
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        v = attn @ v
    # rearrange(v, "b n (h w) d -> b (n d) h w", h=h, w=w)
    return v.transpose(-1, -2).reshape(bsz, num_heads * head_dim, h, w)


@dataclass(frozen=True)
class SecaShape:
    """One stage's SECA problem at a given batch and image size."""

    stage: int
    tokens: int
    height: int
    width: int
    heads: int
    head_dim: int
    clusters: int

    @property
    def label(self) -> str:
        return f"stage {self.stage}: {self.height}x{self.width} tokens, {self.clusters} clusters, {self.heads}x{self.head_dim}"


def seca_shapes(model: str = "secvit_small", img_size: int = 224) -> list[SecaShape]:
    """The SECA shapes of ``model``'s four stages at ``img_size``."""
    arch = VARIANTS[model]
    shapes = []
    for i, (width, heads, clusters) in enumerate(zip(arch.widths, arch.heads, arch.clusters)):
        side = stage_side(img_size, i)
        shapes.append(SecaShape(i + 1, side * side, side, side, heads, width // heads, clusters))
    return shapes


def _seca_inputs(shape: SecaShape, batch: int, device: torch.device, grad: bool, seed: int = 0) -> dict[str, Tensor]:
    """One packed q/k/v tensor (k scaled) and the same values as the NCHW projection appendix E takes."""
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randn(batch, shape.tokens, 3, shape.heads, shape.head_dim, generator=gen).to(device)
    unscaled = packed.clone()
    unscaled[:, :, 1] /= shape.head_dim**-0.5
    nchw = unscaled.permute(0, 2, 3, 4, 1).reshape(batch, -1, shape.height, shape.width).contiguous()
    return {"packed": packed.requires_grad_(grad), "nchw": nchw.requires_grad_(grad)}


def _seca_candidates(shape: SecaShape, inputs: dict[str, Tensor]) -> dict[str, Callable[[], Tensor]]:
    """Each implementation, from its own input layout to (B, N, C) token layout."""
    packed, nchw = inputs["packed"], inputs["nchw"]
    bsz = packed.shape[0]
    return {
        "appendix_e": lambda: appendix_e_seca(nchw, shape.heads, shape.clusters).flatten(2).transpose(1, 2),
        "reference": lambda: seca_reference(*unpack_qkv(packed), shape.clusters).transpose(1, 2).reshape(bsz, shape.tokens, -1),
        "fast": lambda: seca_fast(packed, shape.clusters),
    }


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def bench_seca(
    batch: int = 8,
    device: str = "cpu",
    rounds: int = 7,
    model: str = "secvit_small",
    img_size: int = 224,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Time appendix-E code, :func:`seca_reference` and :func:`seca_fast` at every stage shape of
    ``model``, forward and forward+backward; check they agree first."""
    dev = torch.device(device)
    rows = []
    for shape in seca_shapes(model, img_size):
        row: dict[str, Any] = {"stage": shape.stage, "tokens": shape.tokens, "heads": shape.heads, "head_dim": shape.head_dim, "clusters": shape.clusters}
        # agreement (also of gradients) before timing
        inputs = _seca_inputs(shape, batch, dev, grad=True)
        outs = {name: fn() for name, fn in _seca_candidates(shape, inputs).items()}
        base = outs["appendix_e"]
        grad = torch.randn_like(base)
        grads = {}
        for name, out in outs.items():
            (g,) = torch.autograd.grad(out, inputs["nchw" if name == "appendix_e" else "packed"], grad)
            grads[name] = g if name != "appendix_e" else None
        row["max_abs_diff"] = {name: float((out - base).detach().abs().max()) for name, out in outs.items() if name != "appendix_e"}
        row["max_abs_grad_diff_fast_vs_reference"] = float((grads["fast"] - grads["reference"]).abs().max())
        for mode in ("forward", "forward_backward"):
            training = mode == "forward_backward"
            inputs = _seca_inputs(shape, batch, dev, grad=training)
            candidates = _seca_candidates(shape, inputs)
            if training:
                candidates = {name: (lambda fn=fn: fn().backward(grad)) for name, fn in candidates.items()}
            else:
                candidates = {name: (lambda fn=fn: _no_grad(fn)) for name, fn in candidates.items()}
            label = f"seca stage {shape.stage} {mode}"
            samples = time_interleaved(candidates, dev, rounds=rounds, progress=(lambda m: progress(f"{label}: {m}")) if progress else None)
            ms = {name: 1000 * median(s) for name, s in samples.items()}
            row[mode] = {
                "ms": ms,
                "speedup_vs_appendix_e": {name: ms["appendix_e"] / t for name, t in ms.items()},
            }
        rows.append(row)
    summary = {
        mode: {
            name: _geomean([r[mode]["speedup_vs_appendix_e"][name] for r in rows])
            for name in ("reference", "fast")
        }
        for mode in ("forward", "forward_backward")
    }
    return {"model": model, "img_size": img_size, "batch": batch, "rounds": rounds, "shapes": rows, "geomean_speedup_vs_appendix_e": summary}


def _no_grad(fn: Callable[[], Any]) -> Any:
    with torch.no_grad():
        return fn()


def seca_markdown(result: dict[str, Any]) -> str:
    """Tables of a :func:`bench_seca` result (with ``environment`` and ``command`` added)."""
    lines = [env_line(result), ""]
    for mode in ("forward", "forward_backward"):
        lines += [
            f"| stage | tokens | clusters | heads x d | {mode.replace('_', '+')} appendix E ms | reference ms | fast ms | fast vs appendix E |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in result["shapes"]:
            ms, up = row[mode]["ms"], row[mode]["speedup_vs_appendix_e"]
            lines.append(
                f"| {row['stage']} | {row['tokens']} | {row['clusters']} | {row['heads']} x {row['head_dim']} | "
                f"{ms['appendix_e']:.2f} | {ms['reference']:.2f} ({up['reference']:.2f}x) | {ms['fast']:.2f} | {up['fast']:.2f}x |"
            )
        geo = result["geomean_speedup_vs_appendix_e"][mode]
        lines += [f"| geomean | | | | 1.00x | {geo['reference']:.2f}x | | {geo['fast']:.2f}x |", ""]
    return "\n".join(lines)
