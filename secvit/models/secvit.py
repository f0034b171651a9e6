"""SecViT: Semantic Equitable Clustering Vision Transformer.

"Semantic Equitable Clustering: A Simple, Fast and Effective Strategy for Vision
Transformer", Fan et al., 2024 (arXiv 2405.13337).

The architecture is the released (trained) one: a four-convolution stem, four
stages of pre-norm blocks (CPE, SECA, convolutional FFN), strided 3x3 convolutions
between stages, and a 1x1 conv + BN + Swish head. Stage inputs and outputs are NCHW; inside a stage the blocks run on channels-last maps.
Released checkpoints load through :func:`checkpoint_filter_fn`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from timm.layers import DropPath, LayerScale, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from secvit.errors import SecvitError
from secvit.models.seca import SECA, DepthwiseConv, PointwiseConv, RotaryEmbedding2d

__all__ = ["SecViT", "checkpoint_filter_fn", "VARIANTS"]


@dataclass(frozen=True)
class Variant:
    """Architecture of one SecViT size."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    drop_path_rate: float
    layer_scale_stages: tuple[int, ...] = ()
    clusters: tuple[int, int, int, int] = (32, 8, 2, 1)


VARIANTS: dict[str, Variant] = {
    "secvit_tiny": Variant((64, 128, 256, 512), (2, 2, 9, 2), (2, 4, 8, 16), 0.1),
    "secvit_small": Variant((64, 128, 256, 512), (3, 4, 18, 4), (2, 4, 8, 16), 0.15),
    "secvit_base": Variant((80, 160, 320, 512), (4, 8, 26, 8), (5, 5, 10, 16), 0.4, (2, 3)),
    "secvit_large": Variant((112, 224, 448, 640), (4, 8, 26, 8), (7, 7, 14, 20), 0.5, (2, 3)),
}


def _conv_bn(cin: int, cout: int, stride: int, act: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.GELU()) if act else nn.Sequential(*layers)


def _stage_size(size: int, stage: int) -> int:
    """Feature-map side length at ``stage`` for an input side of ``size`` (stride-2 convs, padding 1)."""
    for _ in range(stage + 2):
        size = math.ceil(size / 2)
    return size


class Stem(nn.Sequential):
    """Stride-4 convolutional stem that also validates the input image."""

    def __init__(self, in_chans: int, width: int, clusters: tuple[int, ...]) -> None:
        half = width // 2
        super().__init__(
            _conv_bn(in_chans, half, 2, act=True),
            _conv_bn(half, half, 1, act=True),
            _conv_bn(half, half, 1, act=True),
            _conv_bn(half, width, 2, act=False),
        )
        self.in_chans = in_chans
        self.clusters = clusters

    def min_size(self) -> int:
        """Smallest square input whose every stage has at least one token per cluster."""
        size = 1
        while any(_stage_size(size, i) ** 2 < c for i, c in enumerate(self.clusters)):
            size += 1
        return size

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            shape = "x".join(map(str, x.shape))
            raise SecvitError(
                f"expected a batch of {self.in_chans}-channel (RGB) images shaped (B, {self.in_chans}, H, W), "
                f"got {shape}; convert images to RGB first"
            )
        height, width = x.shape[-2:]
        for i, clusters in enumerate(self.clusters):
            tokens = _stage_size(height, i) * _stage_size(width, i)
            if tokens < clusters:
                raise SecvitError(
                    f"input {height}x{width} is too small: stage {i + 1} would have {tokens} tokens for "
                    f"{clusters} clusters; use images of at least {self.min_size()}x{self.min_size()}"
                )
        return super().forward(x)


class ConvFFN(nn.Module):
    """1x1 expand, GELU, residual 3x3 depthwise conv, 1x1 project, on channels-last maps (B, H, W, C)."""

    def __init__(self, dim: int, ratio: int = 3) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1 = PointwiseConv(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden, 3)
        self.fc2 = PointwiseConv(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x))
        x = x + self.dwconv(x)
        return self.fc2(x)


class SecBlock(nn.Module):
    """x += CPE(x); x += SECA(LN(x)); x += FFN(LN(x)) (with optional layer scale and drop path).

    Works on channels-last maps (B, H, W, C): the 1x1 convolutions of the released model
    run as linear maps on the channel dim, without layout changes inside the block.
    """

    def __init__(
        self, dim: int, heads: int, clusters: int, drop_path: float, layer_scale: float | None
    ) -> None:
        super().__init__()
        self.cpe = DepthwiseConv(dim, 3)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SECA(dim, heads, clusters)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvFFN(dim)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, tables: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x = x + self.cpe(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), tables)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def cluster_assignment(self, x: Tensor, tables: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Cluster index of every token per head (B, heads, H, W) in this block's attention."""
        return self.attn.cluster_assignment(self.norm1(x + self.cpe(x)), tables)


class SecStage(nn.Module):
    """Optional stride-2 downsampling followed by SecViT blocks sharing one rotary table.

    Takes and returns NCHW maps; the blocks run on one channels-last copy of the map
    (the returned map is an NCHW view of channels-last memory, which the next
    convolution consumes without a copy).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        heads: int,
        clusters: int,
        drop_paths: list[float],
        layer_scale: float | None,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_dim, dim, 3, 2, 1), nn.BatchNorm2d(dim)) if downsample else nn.Identity()
        )
        self.rope = RotaryEmbedding2d(dim // heads)
        self.scale = (dim // heads) ** -0.5
        self.blocks = nn.ModuleList(SecBlock(dim, heads, clusters, dp, layer_scale) for dp in drop_paths)
        self.grad_checkpointing = False

    def tokens(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Downsampled channels-last map (B, H, W, C) and the rotary tables of its size."""
        x = self.downsample(x).permute(0, 2, 3, 1).contiguous()
        return x, self.rope.qkv_tables(x.shape[1], x.shape[2], self.scale)

    def forward(self, x: Tensor) -> Tensor:
        x, tables = self.tokens(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, tables, use_reentrant=False)
            else:
                x = block(x, tables)
        return x.permute(0, 3, 1, 2)


class ClassifierHead(nn.Module):
    """1x1 conv to ``hidden`` channels, BN, Swish, global average pool, dropout, linear classifier."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, hidden, 1)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(self.act(self.norm(self.proj(x)))).flatten(1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class SecViT(nn.Module):
    """SecViT backbone and classifier (timm interface)."""

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 9, 2),
        heads: tuple[int, ...] = (2, 4, 8, 16),
        clusters: tuple[int, ...] = (32, 8, 2, 1),
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
        if global_pool != "avg":
            raise ValueError("SecViT only supports global_pool='avg'")
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.head_hidden_size = head_hidden_size
        self.clusters = tuple(clusters)
        self.stem = Stem(in_chans, widths[0], self.clusters)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        self.feature_info = []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stages.append(
                SecStage(
                    widths[max(i - 1, 0)],
                    width,
                    depth,
                    heads[i],
                    clusters[i],
                    rates[start : start + depth],
                    layer_scale_init if i in layer_scale_stages else None,
                    downsample=i > 0,
                )
            )
            start += depth
            self.feature_info.append(dict(num_chs=width, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(widths[-1], head_hidden_size, num_classes, drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"gamma"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------
# Released checkpoints


_RENAMES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"^patch_embed\.proj\.(\d+)\.", lambda m: f"stem.{int(m.group(1)) // 3}.{int(m.group(1)) % 3}."),
    (r"^layers\.(\d+)\.downsample\.reduction\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.0."),
    (r"^layers\.(\d+)\.downsample\.norm\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample.1."),
    (r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"\.pos\.", ".cpe."),
    (r"\.norm([12])\.norm\.", r".norm\1."),
    (r"\.attn\.lepe\.", ".attn.lce."),
    (r"\.attn\.out_proj\.", ".attn.proj."),
    (r"\.ffn\.", ".mlp."),
    (r"\.gamma_([12])$", r".ls\1.gamma"),
    (r"^proj\.", "head.proj."),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]


def _released_name(name: str) -> str:
    for pattern, repl in _RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def _describe(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: SecViT) -> dict[str, Tensor]:
    """Map a released SecViT state dict (or one of ours) onto ``model``'s layout, strictly.

    Raises :class:`SecvitError` naming missing, unexpected and mis-shaped keys.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    released = any(k.startswith("patch_embed.") or k.startswith("layers.") for k in state_dict)
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        if released and name.endswith("RoPE.angle"):
            stage = model.stages[int(name.split(".")[1])]
            if value.shape != stage.rope.angle.shape or not torch.allclose(value.double(), stage.rope.angle.double()):
                raise SecvitError(f"checkpoint rotary table {name} differs from this model's: wrong variant?")
            continue
        new = _released_name(name) if released else name
        if new in target and value.ndim == target[new].ndim + 2 and value.shape[-2:] == (1, 1):
            value = value.flatten(1)  # 1x1 conv classifier -> linear
        elif new.endswith(".gamma") and value.ndim == 4:
            value = value.flatten()  # (1, C, 1, 1) layer scale -> (C,)
        out[new] = value
    missing = [k for k in target if k not in out]
    unexpected = [k for k in out if k not in target]
    mismatched = [f"{k} {tuple(out[k].shape)} vs {tuple(target[k].shape)}" for k in target if k in out and out[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} {_describe(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
            if keys
        ]
        raise SecvitError(f"checkpoint does not match {type(model).__name__} {_variant_of(model)}: " + "; ".join(parts))
    return out


def _variant_of(model: SecViT) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture", "")


# ---------------------------------------------------------------------------
# Registration


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "stem.0.0",
        "classifier": "head.fc",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2405.13337",
        "paper_name": "Semantic Equitable Clustering: A Simple, Fast and Effective Strategy for Vision Transformer",
        "origin_url": "https://github.com/qhfan/SecViT",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"{name}.in1k": _cfg() for name in VARIANTS})


def _create(variant: str, pretrained: bool = False, **kwargs) -> SecViT:
    arch = VARIANTS[variant]
    model_args = dict(
        widths=arch.widths,
        depths=arch.depths,
        heads=arch.heads,
        clusters=arch.clusters,
        layer_scale_stages=arch.layer_scale_stages,
        drop_path_rate=arch.drop_path_rate,
    )
    model_args.update(kwargs)
    return build_model_with_cfg(
        SecViT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **model_args,
    )


@register_model
def secvit_tiny(pretrained: bool = False, **kwargs) -> SecViT:
    """SecViT-T: 15.0M params, 2.5 GFLOPs (paper convention)."""
    return _create("secvit_tiny", pretrained, **kwargs)


@register_model
def secvit_small(pretrained: bool = False, **kwargs) -> SecViT:
    """SecViT-S: 26.8M params, 4.4 GFLOPs (paper convention)."""
    return _create("secvit_small", pretrained, **kwargs)


@register_model
def secvit_base(pretrained: bool = False, **kwargs) -> SecViT:
    """SecViT-B: 54.7M params, 9.7 GFLOPs (paper convention)."""
    return _create("secvit_base", pretrained, **kwargs)


@register_model
def secvit_large(pretrained: bool = False, **kwargs) -> SecViT:
    """SecViT-L: 96.5M params, 18.1 GFLOPs (paper convention)."""
    return _create("secvit_large", pretrained, **kwargs)
