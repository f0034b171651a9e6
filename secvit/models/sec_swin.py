"""SEC-Swin: the Swin Transformer with its (shifted) window attention replaced by SECA.

Paper section 4.1 ("Strict comparison with baselines"), table 2 (a) and table 8:
"we merely substitute the attention mechanism in the original Swin-Transformer ...
with our SECA and without introducing any other modules (such as CPE, Conv
Stem)". Everything else is timm's :class:`~timm.models.swin_transformer.SwinTransformer`
(4x4 patch embedding + LayerNorm, patch merging, pre-norm blocks with an MLP of
ratio 4, final LayerNorm, average pool, linear classifier), used as a library:
the blocks are swapped after construction, each keeping Swin's norms, MLP and drop
path. SECA (with its rotary position embedding and 5x5 LCE, which replace Swin's
relative position bias) uses 32, 8 and 2 clusters in stages 1-3 and global
attention in stage 4 (appendix A).

There are no windows any more, so there is neither shifting nor window padding;
the patch embedding pads inputs to a multiple of 4 and patch merging pads odd
maps, so every input size works. ``features_only`` and ``forward_intermediates``
return NCHW stage maps, and so does the head after ``reset_classifier(0, '')``;
``forward_features`` keeps Swin's NHWC layout.

The unmodified baselines are timm's ``swin_tiny_patch4_window7_224`` and
``swin_small_patch4_window7_224``.
"""

from __future__ import annotations

from functools import partial

import torch.fx
from timm.layers import PatchEmbed
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock
from torch import Tensor, nn

from secvit.models.seca import SECA, RotaryEmbedding2d
from secvit.models.staged import check_image, init_weights, seca_attend

__all__ = ["SecSwinBlock", "SecSwinTransformer"]

torch.fx.wrap("seca_attend")
torch.fx.wrap("check_image")


class SecSwinBlock(nn.Module):
    """A Swin block whose window attention is SECA: x += SECA(LN(x)); x += MLP(LN(x)). NHWC."""

    def __init__(self, block: SwinTransformerBlock, clusters: int) -> None:
        super().__init__()
        dim, heads = block.dim, block.attn.num_heads
        self.dim = dim
        self.norm1 = block.norm1
        self.attn = SECA(dim, heads, clusters)
        self.rope = RotaryEmbedding2d(dim // heads)
        self.drop_path1 = block.drop_path1
        self.norm2 = block.norm2
        self.mlp = block.mlp
        self.drop_path2 = block.drop_path2
        self.attn.apply(init_weights)

    def set_input_size(self, *args, **kwargs) -> None:
        """Swin resizes windows and masks here; SECA has neither."""

    def forward(self, x: Tensor) -> Tensor:
        y = seca_attend(self.attn, self.rope, self.norm1(x).permute(0, 3, 1, 2))
        x = x + self.drop_path1(y.permute(0, 2, 3, 1))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SecSwinTransformer(SwinTransformer):
    """timm's SwinTransformer with every block's attention replaced by SECA (any input size)."""

    def __init__(self, *args, clusters: tuple[int, ...] = (32, 8, 2, 1), **kwargs) -> None:
        kwargs["strict_img_size"] = False  # no windows, no masks: any input size
        kwargs.setdefault("embed_layer", partial(PatchEmbed, dynamic_img_pad=True))
        super().__init__(*args, **kwargs)
        if len(clusters) != len(self.layers):
            raise ValueError(f"need one cluster count per stage ({len(self.layers)}), got {clusters}")
        self.clusters = tuple(clusters)
        for stage, stage_clusters in zip(self.layers, clusters):
            stage.blocks = nn.Sequential(*(SecSwinBlock(block, stage_clusters) for block in stage.blocks))

    def forward_features(self, x: Tensor) -> Tensor:
        return super().forward_features(check_image(x, self.in_chans, self.clusters))

    def forward_intermediates(self, x: Tensor, *args, **kwargs):
        return super().forward_intermediates(check_image(x, self.in_chans, self.clusters), *args, **kwargs)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Swin's head; the unpooled map (``reset_classifier(0, '')``) comes back NCHW like every project model."""
        x = super().forward_head(x, pre_logits=pre_logits)
        return x.permute(0, 3, 1, 2) if self.head.global_pool.is_identity() else x


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2405.13337",
        "paper_name": "Semantic Equitable Clustering: A Simple, Fast and Effective Strategy for Vision Transformer",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"sec_swin_tiny.untrained": _cfg(), "sec_swin_small.untrained": _cfg()})


def _create(variant: str, pretrained: bool = False, **kwargs) -> SecSwinTransformer:
    return build_model_with_cfg(
        SecSwinTransformer,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


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
