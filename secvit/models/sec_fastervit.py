"""SEC-FasterViT: FasterViT with its hierarchical attention replaced by SECA.

Paper table 2 (b), table 8 and appendix A: FasterViT's design with convolutional
stages 1-2 and SECA in stages 3-4 (2 clusters in stage 3, global attention in
stage 4), "merely substituting the attention mechanism ... without introducing
any other modules". Our implementation of FasterViT's layout (Hatamizadeh et al.,
ICLR 2024), NCHW throughout:

* stem: conv3x3 s2 (3 -> in_dim, no bias) BN ReLU, conv3x3 s2 (in_dim -> C, no bias) BN ReLU;
* stages 1-2: residual conv blocks x + BN(conv3x3(GELU(BN(conv3x3(x)))));
* between stages: LayerNorm2d, conv3x3 s2 (no bias) doubling the width;
* stages 3-4: x += pos; x += droppath(SECA(LN(x))); x += droppath(MLP(LN(x))), MLP ratio 4,
  where ``pos`` is FasterViT's learned absolute position embedding (an MLP 2 -> 512
  -> C of the normalised coordinates inside a 7x7 window), tiled over the map as
  FasterViT adds it to every window;
* head: BatchNorm2d (here the end of stage 4, so detection sees it too), average pool, linear.

What goes is FasterViT's hierarchical attention: window attention with its
continuous relative position bias, the carrier tokens and their tokenizer,
attention and MLP. SECA (with its rotary embedding and LCE) attends over the whole
map, so there are no windows and any input size works.

Parameters: 25.9M (SEC-FasterViT-0) and 42.2M (SEC-FasterViT-1) against the
paper's 25M and 41M (without the position MLP they would be 23.7M and 39.2M).

The unmodified baselines ``fastervit_0`` and ``fastervit_1`` (FasterViT-0/1 with
hierarchical attention) come from NVIDIA's ``fastervit`` package, used as a
library and registered here under those names; they are fixed to 224x224 inputs
(their carrier-token layout depends on the resolution) and are for table 2 only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.fx
import torch.utils.checkpoint
from timm.layers import DropPath, LayerNorm2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from secvit.errors import SecvitError
from secvit.models.seca import SECA, RotaryEmbedding2d
from secvit.models.staged import ClassifierHead, SEC_PAPER, StagedBackbone, build, imagenet_cfg, init_weights, seca_attend

__all__ = ["SecFasterViT", "VARIANTS"]

torch.fx.wrap("seca_attend")


@dataclass(frozen=True)
class Variant:
    dim: int
    in_dim: int
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    drop_path_rate: float = 0.2
    clusters: tuple[int, int] = (2, 1)


VARIANTS: dict[str, Variant] = {
    "sec_fastervit_0": Variant(64, 64, (2, 3, 6, 5), (2, 4, 8, 16)),
    "sec_fastervit_1": Variant(80, 32, (1, 3, 8, 5), (2, 4, 8, 16)),
}


class ConvBlock(nn.Module):
    """x + BN(conv3x3(GELU(BN(conv3x3(x)))))."""

    def __init__(self, dim: int, drop_path: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(dim)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.norm2(self.conv2(self.act(self.norm1(self.conv1(x))))))


class WindowPositionEmbedding(nn.Module):
    """FasterViT's absolute position MLP over a window's normalised (row, col) grid, tiled over the map."""

    def __init__(self, dim: int, window: int = 7, hidden: int = 512) -> None:
        super().__init__()
        self.window = window
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, dim, bias=False))
        half = window // 2
        coords = (torch.arange(window, dtype=torch.float32) - half) / half
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), dim=-1).reshape(window * window, 2)
        self.register_buffer("grid", grid, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        bsz, dim, height, width = x.shape
        table = self.mlp(self.grid).transpose(0, 1).reshape(1, dim, self.window, self.window)
        reps_h = (height + self.window - 1) // self.window
        reps_w = (width + self.window - 1) // self.window
        return x + table.repeat(1, 1, reps_h, reps_w)[:, :, :height, :width]


class SecBlock(nn.Module):
    """x += pos; x += SECA(LN(x)); x += MLP(LN(x)) (FasterViT's transformer block with SECA)."""

    def __init__(self, dim: int, heads: int, clusters: int, drop_path: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.pos_embed = WindowPositionEmbedding(dim)
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.attn = SECA(dim, heads, clusters)
        self.rope = RotaryEmbedding2d(dim // heads)
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim * mlp_ratio, 1), nn.GELU(), nn.Conv2d(dim * mlp_ratio, dim, 1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pos_embed(x)
        x = x + self.drop_path(seca_attend(self.attn, self.rope, self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Optional downsampling, blocks, and (last stage only) FasterViT's final BatchNorm."""

    def __init__(self, blocks: list[nn.Module], in_dim: int, dim: int, downsample: bool, final_norm: bool = False) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(LayerNorm2d(in_dim), nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False)) if downsample else nn.Identity()
        )
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(dim) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)


class SecFasterViT(StagedBackbone):
    """SEC-FasterViT backbone and classifier (timm interface, NCHW features)."""

    def __init__(
        self,
        dim: int = 64,
        in_dim: int = 64,
        depths: tuple[int, ...] = (2, 3, 6, 5),
        heads: tuple[int, ...] = (2, 4, 8, 16),
        clusters: tuple[int, int] = (2, 1),
        mlp_ratio: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        widths = [dim * 2**i for i in range(4)]
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.in_chans = in_chans
        self.clusters = (1, 1, *clusters)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False),
            nn.BatchNorm2d(in_dim, eps=1e-4),
            nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False),
            nn.BatchNorm2d(dim, eps=1e-4),
            nn.ReLU(),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, start, self.feature_info = [], 0, []
        for i, depth in enumerate(depths):
            dps = rates[start : start + depth]
            if i < 2:
                blocks = [ConvBlock(widths[i], dp) for dp in dps]
            else:
                blocks = [SecBlock(widths[i], heads[i], clusters[i - 2], dp, mlp_ratio) for dp in dps]
            stages.append(Stage(blocks, widths[max(i - 1, 0)], widths[i], downsample=i > 0, final_norm=i == len(depths) - 1))
            start += depth
            self.feature_info.append(dict(num_chs=widths[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(widths[-1], num_classes, None, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(init_weights)


def _cfg(**kwargs) -> dict:
    return imagenet_cfg(**{"first_conv": "stem.0", "crop_pct": 0.875, **SEC_PAPER, **kwargs})  # the baselines override


# the unmodified FasterViT-0/1 baselines, built from the pinned ``fastervit`` package (see the end of the file)
_FASTERVIT = {
    "fastervit_0": dict(dim=64, in_dim=64, depths=[2, 3, 6, 5]),
    "fastervit_1": dict(dim=80, in_dim=32, depths=[1, 3, 8, 5]),
}

default_cfgs = {f"{name}.in1k": _cfg() for name in VARIANTS}
default_cfgs.update(
    {
        f"{name}.in1k": _cfg(
            first_conv="patch_embed.conv_down.0",
            classifier="head",
            fixed_input_size=True,
            paper_ids="arXiv:2306.06189",
            paper_name="FasterViT: Fast Vision Transformers with Hierarchical Attention",
            origin_url="https://github.com/NVlabs/FasterViT",
        )
        for name in _FASTERVIT
    }
)
default_cfgs = generate_default_cfgs(default_cfgs)


def _create(variant: str, pretrained: bool = False, **kwargs) -> SecFasterViT:
    return build(SecFasterViT, variant, pretrained, VARIANTS[variant], **kwargs)


@register_model
def sec_fastervit_0(pretrained: bool = False, **kwargs) -> SecFasterViT:
    """SEC-FasterViT-0 (table 2): FasterViT-0 (64, depths 2-3-6-5) with SECA in stages 3-4."""
    return _create("sec_fastervit_0", pretrained, **kwargs)


@register_model
def sec_fastervit_1(pretrained: bool = False, **kwargs) -> SecFasterViT:
    """SEC-FasterViT-1 (table 2): FasterViT-1 (80, depths 1-3-8-5) with SECA in stages 3-4."""
    return _create("sec_fastervit_1", pretrained, **kwargs)


# ---------------------------------------------------------------------------
# Unmodified FasterViT-0/1 baselines (table 2), from the pinned ``fastervit`` package


def _create_fastervit(variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """FasterViT from NVIDIA's package (hierarchical attention with carrier tokens; 224x224 inputs only)."""
    if pretrained:
        raise SecvitError(f"{variant} has no weights here; train it (it is an untrained table 2 baseline)")
    if kwargs.get("features_only"):
        raise SecvitError(f"{variant} is a classification baseline for table 2 and has no features_only mode")
    with warnings.catch_warnings():  # the package imports timm's deprecated module paths
        warnings.simplefilter("ignore", FutureWarning)
        from fastervit.models.faster_vit import FasterViT

    model_args = dict(
        _FASTERVIT[variant],
        num_heads=[2, 4, 8, 16],
        window_size=[7, 7, 7, 7],
        ct_size=2,
        mlp_ratio=4,
        resolution=224,
        drop_path_rate=0.2,
        hat=[False, False, True, False],
    )
    model_args.update(kwargs)
    return build_model_with_cfg(FasterViT, variant, pretrained=False, **model_args)


@register_model
def fastervit_0(pretrained: bool = False, **kwargs) -> nn.Module:
    """FasterViT-0 baseline (table 2): 31.4M params; 224x224 inputs only."""
    return _create_fastervit("fastervit_0", pretrained, **kwargs)


@register_model
def fastervit_1(pretrained: bool = False, **kwargs) -> nn.Module:
    """FasterViT-1 baseline (table 2): 53.4M params; 224x224 inputs only."""
    return _create_fastervit("fastervit_1", pretrained, **kwargs)
