"""Test oracle: synthetic released checkpoints and a functional forward pass written
directly from the released model's description (../shared/notes/architectures.md),
independent of secvit's modules."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

LAYOUT = json.loads((Path(__file__).parent / "data" / "official-secvit-state-dict.json").read_text())
HEADS = {
    "secvit_tiny": (2, 4, 8, 16),
    "secvit_small": (2, 4, 8, 16),
    "secvit_base": (5, 5, 10, 16),
    "secvit_large": (7, 7, 14, 20),
}
CLUSTERS = (32, 8, 2, 1)


def released_state_dict(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random weights in the exact names and shapes of a released checkpoint."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in LAYOUT[name]:
        if key.endswith("RoPE.angle"):
            angle = 1.0 / (10000 ** torch.linspace(0, 1, shape[0] // 2))
            out[key] = angle.repeat_interleave(2)
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("gamma_1") or key.endswith("gamma_2"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight") and len(shape) >= 2:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            out[key] = torch.randn(shape, generator=g) / fan_in**0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.1 + (1.0 if key.endswith("norm.weight") else 0.0)
        out[key] = out[key].to(dtype) if out[key].is_floating_point() else out[key]
    return out


def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"], False, 0.0, 1e-5)


def _ln(sd, p, x):
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], sd[p + "weight"], sd[p + "bias"], 1e-6).permute(0, 3, 1, 2)


def _conv(sd, p, x, stride=1, groups=1):
    w = sd[p + "weight"]
    return F.conv2d(x, w, sd[p + "bias"], stride, w.shape[-1] // 2, groups=groups)


def _rotate(x, angle, h, w):
    """Rows rotate the first half of the channels, columns the second; pairs (2i, 2i+1)."""
    d = x.shape[-1]
    rows = torch.arange(h, dtype=x.dtype).repeat_interleave(w)  # token t = r*w + c
    cols = torch.arange(w, dtype=x.dtype).repeat(h)
    theta = torch.cat([rows[:, None] * angle[None], cols[:, None] * angle[None]], dim=1)  # (hw, d)
    out = x.clone()
    for i in range(0, d, 2):
        c, s = theta[:, i].cos(), theta[:, i].sin()
        out[..., i] = x[..., i] * c - x[..., i + 1] * s
        out[..., i + 1] = x[..., i + 1] * c + x[..., i] * s
    return out


def _seca(sd, p, x, heads, clusters, angle):
    b, c, h, w = x.shape
    d = c // heads
    qkv = _conv(sd, p + "qkv.", x)
    lce = _conv(sd, p + "lepe.", qkv[:, 2 * c :], groups=c)
    q, k, v = qkv.reshape(b, 3, heads, d, h * w).permute(1, 0, 2, 4, 3)
    q, k = _rotate(q, angle, h, w), _rotate(k, angle, h, w) * d**-0.5
    if clusters > 1:
        score = F.cosine_similarity(k.mean(2, keepdim=True), k, dim=-1)  # (b, heads, hw)
        order = score.argsort(-1)
        out = torch.empty_like(v)
        for bi in range(b):
            for hi in range(heads):
                idx = order[bi, hi]
                for chunk in idx.chunk(clusters):
                    attn = torch.softmax(q[bi, hi, chunk] @ k[bi, hi, chunk].T, -1)
                    out[bi, hi, chunk] = attn @ v[bi, hi, chunk]
    else:
        out = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    out = out.permute(0, 1, 3, 2).reshape(b, c, h, w)
    return _conv(sd, p + "out_proj.", out + lce)


def released_forward(sd: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    """Logits of the released architecture for the weights ``sd`` (H*W divisible by the clusters)."""
    for i in (0, 3, 6, 9):
        x = _bn(sd, f"patch_embed.proj.{i + 1}.", _conv(sd, f"patch_embed.proj.{i}.", x, stride=2 if i in (0, 9) else 1))
        x = F.gelu(x) if i != 9 else x
    for s in range(4):
        h, w = x.shape[-2:]
        depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"layers.{s}.blocks."))
        for j in range(depth):
            p = f"layers.{s}.blocks.{j}."
            x = x + _conv(sd, p + "pos.", x, groups=x.shape[1])
            y = _seca(sd, p + "attn.", _ln(sd, p + "norm1.norm.", x), HEADS[name][s], CLUSTERS[s], sd[f"layers.{s}.RoPE.angle"])
            x = x + (sd[p + "gamma_1"] * y if p + "gamma_1" in sd else y)
            y = F.gelu(_conv(sd, p + "ffn.fc1.", _ln(sd, p + "norm2.norm.", x)))
            y = _conv(sd, p + "ffn.fc2.", y + _conv(sd, p + "ffn.dwconv.", y, groups=y.shape[1]))
            x = x + (sd[p + "gamma_2"] * y if p + "gamma_2" in sd else y)
        if s < 3:
            x = _bn(sd, f"layers.{s}.downsample.norm.", _conv(sd, f"layers.{s}.downsample.reduction.", x, stride=2))
    x = _bn(sd, "norm.", _conv(sd, "proj.", x))
    x = (x * torch.sigmoid(x)).mean((2, 3), keepdim=True)
    return _conv(sd, "head.", x).flatten(1)
