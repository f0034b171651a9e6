"""PaCa-ViT: patch-to-cluster attention (Grainger et al., CVPR 2023).

Our implementation from the architecture notes ("PaCa-ViT"); a table 1
comparison row of the SecViT paper.

Stem: conv3x3 s2 (3 -> C/2), conv3x3 s2 (C/2 -> C), LayerNorm. Between stages:
conv3x3 s2 + LayerNorm. Inside a stage the tokens are (B, N, C); a LayerNorm
closes every stage, and the stage returns its normalised map as NCHW (this is the
map that feeds detection and segmentation, and the last one feeds the classifier:
average pool, linear).
Block: x += droppath(PaCa(LN(x))); x += droppath(MLP(LN(x))),
MLP = Linear C -> 4C, h + dwconv3x3(h), GELU, Linear 4C -> C.
PaCa with M clusters: z = softmax over the tokens of a clustering net (dwconv7x7,
GELU, 1x1 C -> C, GELU, 1x1 C -> M without bias) applied to the block's normalised
input; cluster tokens c = LN(z @ x); queries from the patches, keys and values from
the clusters (separate linears with bias), multi-head attention, output linear.
The clustering net sits in the first block of each stage; the later blocks reuse
its z with their own x. M = 0 (stage 4) is plain global attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from secvit.models.variants import Variant
from secvit.models.staged import ClassifierHead, StagedBackbone, build, imagenet_cfg, init_weights

__all__ = ["PaCaViT", "VARIANTS"]


VARIANTS: dict[str, Variant] = {
    "pacavit_tiny": Variant((96, 192, 320, 384), (2, 2, 4, 2), (2, 4, 8, 16), 0.1),
    "pacavit_small": Variant((96, 192, 320, 384), (3, 3, 10, 3), (2, 4, 8, 16), 0.1),
    "pacavit_base": Variant((96, 192, 384, 512), (3, 3, 18, 3), (2, 4, 8, 16), 0.5),
}


def _to_map(x: Tensor, height: int, width: int) -> Tensor:
    """(B, N, C) tokens -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class ClusteringNet(nn.Module):
    """Soft assignment of the tokens to ``clusters`` clusters: (B, M, N), softmax over the tokens."""

    def __init__(self, dim: int, clusters: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, clusters, 1, bias=False),
        )

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.net(_to_map(x, height, width)).flatten(2).softmax(-1)


class PaCaAttention(nn.Module):
    """Multi-head attention with queries from the patches and keys/values from the clusters (or the patches)."""

    def __init__(self, dim: int, heads: int, clusters: int) -> None:
        super().__init__()
        self.heads = heads
        self.clusters = clusters
        self.cluster_norm = nn.LayerNorm(dim) if clusters else nn.Identity()
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, z: Tensor | None) -> Tensor:
        bsz, num, dim = x.shape
        source = self.cluster_norm(z @ x) if z is not None else x  # (B, M, C) or (B, N, C)
        q = self.q(x).reshape(bsz, num, self.heads, -1).transpose(1, 2)
        k, v = self.kv(source).reshape(bsz, source.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(bsz, num, dim))


class Mlp(nn.Module):
    """Linear expand, residual 3x3 depthwise conv, GELU, linear project."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = self.fc1(x)
        x = x + self.dwconv(_to_map(x, height, width)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class PaCaBlock(nn.Module):
    def __init__(self, dim: int, heads: int, clusters: int, drop_path: float, first: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.clustering = ClusteringNet(dim, clusters) if clusters and first else None
        self.attn = PaCaAttention(dim, heads, clusters)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, z: Tensor | None, height: int, width: int) -> tuple[Tensor, Tensor | None]:
        y = self.norm1(x)
        if self.clustering is not None:
            z = self.clustering(y, height, width)
        x = x + self.drop_path1(self.attn(y, z))
        x = x + self.drop_path2(self.mlp(self.norm2(x), height, width))
        return x, z


class PaCaStage(nn.Module):
    """Optional conv3x3 s2 + LN downsampling, PaCa blocks sharing one clustering, closing LayerNorm. NCHW in/out."""

    def __init__(self, in_dim: int, dim: int, heads: int, clusters: int, drop_paths: list[float], downsample: bool) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, 3, 2, 1) if downsample else nn.Identity()
        self.downsample_norm = nn.LayerNorm(dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(PaCaBlock(dim, heads, clusters, dp, i == 0) for i, dp in enumerate(drop_paths))
        self.norm = nn.LayerNorm(dim)
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        height, width = x.shape[-2], x.shape[-1]
        x = self.downsample_norm(x.flatten(2).transpose(1, 2))
        z = None
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, z = torch.utils.checkpoint.checkpoint(block, x, z, height, width, use_reentrant=False)
            else:
                x, z = block(x, z, height, width)
        return _to_map(self.norm(x), height, width)


class Stem(nn.Module):
    """conv3x3 s2, conv3x3 s2, LayerNorm over channels (NCHW out)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, 2, 1)
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, 2, 1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.conv1(x))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PaCaViT(StagedBackbone):
    """PaCa-ViT backbone and classifier (timm interface, NCHW stage maps)."""

    def __init__(
        self,
        widths: tuple[int, ...] = (96, 192, 320, 384),
        depths: tuple[int, ...] = (2, 2, 4, 2),
        heads: tuple[int, ...] = (2, 4, 8, 16),
        clusters: tuple[int, ...] = (100, 100, 100, 0),
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.in_chans = in_chans
        self.stem = Stem(in_chans, widths[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, start, self.feature_info = [], 0, []
        for i, depth in enumerate(depths):
            stages.append(
                PaCaStage(widths[max(i - 1, 0)], widths[i], heads[i], clusters[i], rates[start : start + depth], i > 0)
            )
            start += depth
            self.feature_info.append(dict(num_chs=widths[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(widths[-1], num_classes, None, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(init_weights)


def _cfg(**kwargs) -> dict:
    return imagenet_cfg(
        "stem.conv1", 0.9, paper_ids="arXiv:2203.11987", paper_name="PaCa-ViT: Learning Patch-to-Cluster Attention in Vision Transformers",
        origin_url="https://github.com/iVMCL/PaCaViT", **kwargs,
    )


default_cfgs = generate_default_cfgs({f"{name}.in1k": _cfg() for name in VARIANTS})


def _create(variant: str, pretrained: bool = False, **kwargs) -> PaCaViT:
    return build(PaCaViT, variant, pretrained, VARIANTS[variant], **kwargs)


@register_model
def pacavit_tiny(pretrained: bool = False, **kwargs) -> PaCaViT:
    """PaCa-Tiny: 12.2M params, 3.2 GFLOPs."""
    return _create("pacavit_tiny", pretrained, **kwargs)


@register_model
def pacavit_small(pretrained: bool = False, **kwargs) -> PaCaViT:
    """PaCa-Small: 22.0M params, 5.5 GFLOPs."""
    return _create("pacavit_small", pretrained, **kwargs)


@register_model
def pacavit_base(pretrained: bool = False, **kwargs) -> PaCaViT:
    """PaCa-Base: 46.9M params, 9.6 GFLOPs."""
    return _create("pacavit_base", pretrained, **kwargs)
