"""STViT (SViT): Vision Transformer with Super Token Sampling (Huang et al., CVPR 2023).

Our implementation from the architecture notes (../../shared notes, "STViT"); a
table 1 comparison row of the SecViT paper. NCHW throughout.

Stem: conv3x3 s2 (3 -> C/2) GELU BN; conv3x3 s1 GELU BN; conv3x3 s2 (C/2 -> C)
GELU BN; conv3x3 s1 GELU BN. Between stages: conv3x3 s2 + BN.
Block: x += dwconv3x3(x); x += droppath(g1 * STA(LN(x))); x += droppath(g2 * FFN(BN(x))),
FFN = 1x1 C -> 4C, GELU, h + dwconv3x3(h), 1x1 4C -> C.

Super token attention (STA) with cell size s: the map is zero-padded to multiples
of s; the initial super tokens are the cell averages; every pixel's association
with the 3x3 super tokens around its cell is softmax(pixel . token * C^-0.5),
computed without gradient; super tokens become the association-weighted means of
their pixels; multi-head self-attention runs over the super tokens; the result is
mapped back to the pixels with the same associations and cropped. s = 1 is plain
global attention. Cell sizes per stage: 8, 4, 1, 1.
Head: 1x1 conv -> 1024, BN, Swish, average pool, linear.

Drop-path rates are not in the notes; the defaults below (0.1, 0.4, 0.6) are ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, LayerNorm2d, LayerScale2d
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from secvit.models.variants import Variant
from secvit.models.staged import ClassifierHead, StagedBackbone, build, imagenet_cfg, init_weights, pad_to_multiple

__all__ = ["STViT", "VARIANTS"]


VARIANTS: dict[str, Variant] = {
    "stvit_small": Variant((64, 128, 320, 512), (3, 5, 9, 3), (1, 2, 5, 8), 0.1),
    "stvit_base": Variant((96, 192, 384, 512), (4, 6, 14, 6), (2, 3, 6, 8), 0.4, (2, 3)),
    "stvit_large": Variant((96, 192, 448, 640), (4, 7, 19, 8), (2, 3, 7, 10), 0.6, (2, 3)),
}


class MultiHeadAttention2d(nn.Module):
    """Global multi-head self-attention over an NCHW map (qkv and projection are 1x1 convs with bias).

    Each head's q, k and v are contiguous in the qkv channels: (head, [q|k|v], head_dim).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        bsz, dim, height, width = x.shape
        qkv = self.qkv(x).reshape(bsz, self.heads, 3 * self.head_dim, height * width).transpose(-1, -2)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(-1, -2).reshape(bsz, dim, height, width))


class SuperTokenAttention(nn.Module):
    """STA: sample super tokens (one association step), attend among them, map back to pixels."""

    def __init__(self, dim: int, heads: int, cell: int) -> None:
        super().__init__()
        self.cell = cell
        self.scale = dim**-0.5
        self.attn = MultiHeadAttention2d(dim, heads)

    def forward(self, x: Tensor) -> Tensor:
        if self.cell == 1:
            return self.attn(x)
        bsz, dim, height, width = x.shape
        s = self.cell
        x = pad_to_multiple(x, s)
        hh, ww = x.shape[-2] // s, x.shape[-1] // s
        cells = hh * ww
        # pixels grouped by cell: (B, cells, s*s, C)
        pixels = x.reshape(bsz, dim, hh, s, ww, s).permute(0, 2, 4, 3, 5, 1).reshape(bsz, cells, s * s, dim)
        with torch.no_grad():
            tokens = F.adaptive_avg_pool2d(x, (hh, ww))
            near = F.unfold(tokens, 3, padding=1).transpose(1, 2).reshape(bsz, cells, dim, 9)
            assoc = (pixels @ near * self.scale).softmax(-1)  # (B, cells, s*s, 9)
            weight = F.fold(assoc.sum(2).transpose(1, 2), (hh, ww), 3, padding=1)  # (B, 1, hh, ww)
        sums = (pixels.transpose(-1, -2) @ assoc).reshape(bsz, cells, dim * 9).transpose(1, 2)
        tokens = F.fold(sums, (hh, ww), 3, padding=1) / (weight + 1e-12)
        tokens = self.attn(tokens)
        near = F.unfold(tokens, 3, padding=1).transpose(1, 2).reshape(bsz, cells, dim, 9)
        out = near @ assoc.transpose(-1, -2)  # (B, cells, C, s*s)
        out = out.reshape(bsz, hh, ww, dim, s, s).permute(0, 3, 1, 4, 2, 5).reshape(bsz, dim, hh * s, ww * s)
        return out[:, :, :height, :width]


class ConvFFN(nn.Module):
    """1x1 expand, GELU, residual 3x3 depthwise conv, 1x1 project."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class STBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cell: int, drop_path: float, layer_scale: float | None) -> None:
        super().__init__()
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.attn = SuperTokenAttention(dim, heads, cell)
        self.ls1 = LayerScale2d(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvFFN(dim)
        self.ls2 = LayerScale2d(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.cpe(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class STStage(nn.Module):
    def __init__(
        self, in_dim: int, dim: int, heads: int, cell: int, drop_paths: list[float], layer_scale: float | None, downsample: bool
    ) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_dim, dim, 3, 2, 1), nn.BatchNorm2d(dim)) if downsample else nn.Identity()
        )
        self.blocks = nn.Sequential(*(STBlock(dim, heads, cell, dp, layer_scale) for dp in drop_paths))
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _conv_act_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GELU(), nn.BatchNorm2d(cout)]


class STViT(StagedBackbone):
    """STViT backbone and classifier (timm interface, NCHW features)."""

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 128, 320, 512),
        depths: tuple[int, ...] = (3, 5, 9, 3),
        heads: tuple[int, ...] = (1, 2, 5, 8),
        cell_sizes: tuple[int, ...] = (8, 4, 1, 1),
        layer_scale_stages: tuple[int, ...] = (),
        layer_scale_init: float = 1e-6,
        in_chans: int = 3,
        num_classes: int = 1000,
        head_hidden_size: int = 1024,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.in_chans = in_chans
        half = widths[0] // 2
        self.stem = nn.Sequential(
            *_conv_act_bn(in_chans, half, 2),
            *_conv_act_bn(half, half, 1),
            *_conv_act_bn(half, widths[0], 2),
            *_conv_act_bn(widths[0], widths[0], 1),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, start, self.feature_info = [], 0, []
        for i, depth in enumerate(depths):
            stages.append(
                STStage(
                    widths[max(i - 1, 0)],
                    widths[i],
                    heads[i],
                    cell_sizes[i],
                    rates[start : start + depth],
                    layer_scale_init if i in layer_scale_stages else None,
                    downsample=i > 0,
                )
            )
            start += depth
            self.feature_info.append(dict(num_chs=widths[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(widths[-1], num_classes, head_hidden_size, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"gamma"}


def _cfg(**kwargs) -> dict:
    return imagenet_cfg(
        "stem.0", 0.9, paper_ids="arXiv:2211.11167", paper_name="Vision Transformer with Super Token Sampling",
        origin_url="https://github.com/hhb072/STViT", **kwargs,
    )


default_cfgs = generate_default_cfgs({f"{name}.in1k": _cfg() for name in VARIANTS})


def _create(variant: str, pretrained: bool = False, **kwargs) -> STViT:
    return build(STViT, variant, pretrained, VARIANTS[variant], **kwargs)


@register_model
def stvit_small(pretrained: bool = False, **kwargs) -> STViT:
    """SViT-S: 25.5M params, 4.4 GFLOPs."""
    return _create("stvit_small", pretrained, **kwargs)


@register_model
def stvit_base(pretrained: bool = False, **kwargs) -> STViT:
    """SViT-B: 51.7M params, 9.9 GFLOPs."""
    return _create("stvit_base", pretrained, **kwargs)


@register_model
def stvit_large(pretrained: bool = False, **kwargs) -> STViT:
    """SViT-L: 95.0M params, 15.6 GFLOPs."""
    return _create("stvit_large", pretrained, **kwargs)
