"""SEC-Swin: the Swin Transformer with its (shifted) window attention replaced by SECA.

Paper section 4.1 ("Strict comparison with baselines"), table 2 (a) and table 8:
"we merely substitute the attention mechanism in the original Swin-Transformer ...
with our SECA and without introducing any other modules (such as CPE, Conv
Stem)". Everything else is Swin's (Liu et al., ICCV 2021; timm's
``swin_*_patch4_window7_224`` at the same sizes): a 4x4 patch embedding with
LayerNorm, patch merging between stages (timm's ``PatchMerging``), pre-norm blocks
with an MLP of ratio 4 (timm's ``Mlp``), a final LayerNorm, average pool and a
linear classifier. SECA (with its rotary position embedding and 5x5 LCE, which take
the place of Swin's relative position bias) uses 32, 8 and 2 clusters in stages
1-3 and global attention in stage 4 (appendix A).

Layout: NHWC inside a stage, as in Swin; NCHW between stages, so the stage maps
(``features_only``, ``forward_intermediates``) and ``forward_features`` are NCHW.
Swin's final LayerNorm closes stage 4. There are no windows any more, so there is
neither shifting nor window padding: the patch embedding pads inputs to a multiple
of 4 and patch merging pads odd maps, so every size that leaves each stage at least
one token per cluster works.

The unmodified baselines are timm's ``swin_tiny_patch4_window7_224`` and
``swin_small_patch4_window7_224``.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.utils.checkpoint
from timm.layers import DropPath, LayerNorm2d, Mlp
from timm.models import generate_default_cfgs, register_model
from timm.models.swin_transformer import PatchMerging
from torch import Tensor, nn

from secvit.models.seca import SECA, RotaryEmbedding2d
from secvit.models.staged import ClassifierHead, SEC_PAPER, StagedBackbone, build, imagenet_cfg, init_weights, pad_to_multiple, seca_attend

__all__ = ["SecSwinBlock", "SecSwinTransformer"]

torch.fx.wrap("seca_attend")


class PatchEmbed(nn.Module):
    """Swin's patch embedding: 4x4 stride-4 conv and LayerNorm; the input is zero-padded to a multiple of 4."""

    def __init__(self, in_chans: int, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.norm = LayerNorm2d(dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(pad_to_multiple(x, self.patch)))


class SecSwinBlock(nn.Module):
    """A Swin block whose (shifted) window attention is SECA: x += SECA(LN(x)); x += MLP(LN(x)). NHWC."""

    def __init__(self, dim: int, heads: int, clusters: int, drop_path: float, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SECA(dim, heads, clusters)
        self.rope = RotaryEmbedding2d(dim // heads)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(seca_attend(self.attn, self.rope, self.norm1(x), channels_last=True))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SecSwinStage(nn.Module):
    """Patch merging (stages 2-4), SEC-Swin blocks and, in the last stage, Swin's final LayerNorm. NCHW in/out."""

    def __init__(
        self, in_dim: int, dim: int, heads: int, clusters: int, drop_paths: list[float], downsample: bool, final_norm: bool
    ) -> None:
        super().__init__()
        self.downsample = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*(SecSwinBlock(dim, heads, clusters, dp) for dp in drop_paths))
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x.permute(0, 2, 3, 1))  # NHWC inside the stage, as in Swin
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x).permute(0, 3, 1, 2)


class SecSwinTransformer(StagedBackbone):
    """Swin Transformer with SECA for every block's attention (timm interface, NCHW stage maps)."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        clusters: tuple[int, ...] = (32, 8, 2, 1),
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        widths = [embed_dim * 2**i for i in range(len(depths))]
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.in_chans = in_chans
        self.clusters = tuple(clusters)
        self.stem = PatchEmbed(in_chans, embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, start, self.feature_info = [], 0, []
        for i, depth in enumerate(depths):
            stages.append(
                SecSwinStage(
                    widths[max(i - 1, 0)],
                    widths[i],
                    num_heads[i],
                    clusters[i],
                    rates[start : start + depth],
                    downsample=i > 0,
                    final_norm=i == len(depths) - 1,
                )
            )
            start += depth
            self.feature_info.append(dict(num_chs=widths[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(widths[-1], num_classes, None, global_pool, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(init_weights)


def _cfg(**kwargs) -> dict:
    return imagenet_cfg("stem.proj", 0.9, fixed_input_size=False, license="apache-2.0", **SEC_PAPER, **kwargs)


default_cfgs = generate_default_cfgs({"sec_swin_tiny.in1k": _cfg(), "sec_swin_small.in1k": _cfg()})


def _create(variant: str, pretrained: bool = False, **kwargs) -> SecSwinTransformer:
    return build(SecSwinTransformer, variant, pretrained, **kwargs)


@register_model
def sec_swin_tiny(pretrained: bool = False, **kwargs) -> SecSwinTransformer:
    """SEC-Swin-T (table 2): Swin-T (96, depths 2-2-6-2, heads 3-6-12-24) with SECA."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2)
    return _create("sec_swin_tiny", pretrained, **dict(args, **kwargs))


@register_model
def sec_swin_small(pretrained: bool = False, **kwargs) -> SecSwinTransformer:
    """SEC-Swin-S (table 2): Swin-S (96, depths 2-2-18-2, heads 3-6-12-24) with SECA."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3)
    return _create("sec_swin_small", pretrained, **dict(args, **kwargs))
