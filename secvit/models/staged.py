"""The timm contract shared by the comparison backbones (SEC-FasterViT, STViT, PaCa-ViT).

Each of these models is a stem followed by four stages that take and return NCHW
maps, a final norm (``Identity`` where the architecture has none) and a
classifier head. :class:`StagedBackbone` gives them timm's feature interface on
top of that layout:

* ``forward_intermediates`` / ``prune_intermediate_layers`` with the semantics of
  timm's own hierarchical models (indices through
  :func:`timm.models._features.feature_take_indices`, ``norm`` applies the final
  norm to the last stage only, ``stop_early``, ``intermediates_only``);
* ``features_only`` through timm's ``FeatureGetterNet`` (``feature_cfg`` with
  ``feature_cls='getter'``), so every model returns the four stage maps in NCHW;
* ``reset_classifier(0)`` gives pooled features, ``reset_classifier(0, '')`` the
  unpooled 4-D map (per-position logits with a classifier); pooling avg/max/avgmax;
* no norm outside the stages: an architecture's final norm ends its last stage, so
  ``forward_features`` is the last stage map and ``norm=True`` changes nothing;
* every input is checked (RGB, and big enough for the clusters) with a one-line
  :class:`~secvit.errors.SecvitError`, also under torch.fx.

:func:`seca_attend` runs a :class:`~secvit.models.seca.SECA` module on an NCHW
map with a rotary table for the map's size. Its cluster bookkeeping depends on
the number of tokens, so it is a leaf for ``torch.fx`` (each file that calls it
registers it with ``torch.fx.wrap``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, trunc_normal_
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from secvit.errors import SecvitError, refused_pickle, unsafe_globals
from secvit.models.seca import SECA, RotaryEmbedding2d

__all__ = ["SEC_PAPER", "ClassifierHead", "StagedBackbone", "build", "check_image", "imagenet_cfg", "init_weights", "pad_to_multiple", "pool_layer", "seca_attend", "stage_side"]


def seca_attend(attn: SECA, rope: RotaryEmbedding2d, x: Tensor, channels_last: bool = False) -> Tensor:
    """``attn`` on the map ``x`` (NCHW, or NHWC with ``channels_last``), in the same layout.

    The rotary table is built for the map's height and width. This is the one place
    that knows SECA's calling convention: the NCHW module ``attn(x, rope(H, W))`` or the
    channels-last one ``attn(x, rope.qkv_tables(H, W, attn.scale))`` (same parameters).
    """
    height, width = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    if hasattr(rope, "qkv_tables"):  # channels-last SECA
        y = x if channels_last else x.permute(0, 2, 3, 1)
        out = attn(y, rope.qkv_tables(height, width, attn.scale))
        return out if channels_last else out.permute(0, 3, 1, 2)
    y = x.permute(0, 3, 1, 2) if channels_last else x
    out = attn(y, rope(height, width))
    return out.permute(0, 2, 3, 1) if channels_last else out


def stage_side(size: int, stage: int) -> int:
    """Side of stage ``stage``'s map (stride 4, then halving with rounding up) for an input side ``size``."""
    return math.ceil(size / 2 ** (stage + 2))


@torch.fx.wrap
def check_image(x: Tensor, in_chans: int, clusters: tuple[int, ...]) -> Tensor:
    """``x`` itself if it is a batch of ``in_chans``-channel images big enough for every stage's clusters.

    Raises :class:`SecvitError` otherwise. A leaf for torch.fx (the checks read the input's
    shape): tracing records one call, kept in the graph because the stem consumes its result.
    """
    if x.ndim != 4 or x.shape[1] != in_chans:
        shape = "x".join(map(str, x.shape))
        raise SecvitError(
            f"expected a batch of {in_chans}-channel (RGB) images shaped (B, {in_chans}, H, W), got {shape}; "
            "convert images to RGB first"
        )
    height, width = x.shape[-2:]
    for i, count in enumerate(clusters):
        tokens = stage_side(height, i) * stage_side(width, i)
        if tokens < count:
            side = 1
            while any(stage_side(side, j) ** 2 < c for j, c in enumerate(clusters)):
                side += 1
            raise SecvitError(
                f"input {height}x{width} is too small: stage {i + 1} would have {tokens} tokens for {count} "
                f"clusters; use images of at least {side}x{side}"
            )
    return x


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad an NCHW map at the bottom and right so both sides are multiples of ``multiple``."""
    pad_h = (multiple - x.shape[-2] % multiple) % multiple
    pad_w = (multiple - x.shape[-1] % multiple) % multiple
    return nn.functional.pad(x, (0, pad_w, 0, pad_h))


SEC_PAPER = {
    "paper_ids": "arXiv:2405.13337",
    "paper_name": "Semantic Equitable Clustering: A Simple, Fast and Effective Strategy for Vision Transformer",
}


def imagenet_cfg(first_conv: str, crop_pct: float, **kwargs) -> dict:
    """timm's ``pretrained_cfg`` of an ImageNet-1k classifier of ours at 224x224 (stride 32, ``head.fc``);
    ``kwargs`` add to it or override (paper and origin fields)."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": crop_pct,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv,
        "classifier": "head.fc",
        **kwargs,
    }


def build(cls: type[nn.Module], variant: str, pretrained: bool, arch: Any = None, **kwargs: Any) -> nn.Module:
    """``cls`` built through timm for ``variant`` from the fields of its ``arch`` dataclass (constructor
    arguments of the same names; ``kwargs`` override them), ``features_only`` giving the four stage maps."""
    if arch is None:
        args = dict(kwargs)
    else:
        args = {**(arch.kwargs() if hasattr(arch, "kwargs") else dataclasses.asdict(arch)), **kwargs}
    try:
        return build_model_with_cfg(cls, variant, pretrained, feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **args)
    except RuntimeError as e:  # timm's weights-only loading of pretrained_cfg's file refused a pickle
        if "weights_only=True blocked" not in str(e):
            raise
        file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
        raise refused_pickle(f"pretrained weights of {variant} ({file or 'pretrained_cfg'})", unsafe_globals(file)) from None


def init_weights(module: nn.Module) -> None:
    """trunc_normal(0.02) for every linear and convolution weight, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


POOL_TYPES = ("avg", "max", "avgmax", "")


def pool_layer(pool_type: str) -> SelectAdaptivePool2d:
    """timm's global pooling of ``pool_type`` ('' = none: the map passes through unflattened)."""
    if pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of {POOL_TYPES} ('' = no pooling), got {pool_type!r}")
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


class ClassifierHead(nn.Module):
    """Optional 1x1 conv ``proj`` to ``hidden`` channels + BN ``norm`` + Swish (SecViT's and STViT's
    head), global pool, dropout, linear classifier ``fc``.

    With ``pool_type=''`` nothing is pooled: the head returns (B, C, H, W) maps
    (``pre_logits`` or no classifier) or per-position logits (B, classes, H, W), the
    classifier acting as a 1x1 conv with the same weights.
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int | None = None, pool_type: str = "avg", drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Conv2d(in_dim, hidden, 1) if hidden else nn.Identity()
        self.norm: nn.Module = nn.BatchNorm2d(hidden) if hidden else nn.Identity()
        self.act: nn.Module = nn.SiLU() if hidden else nn.Identity()
        self.num_features = hidden or in_dim
        self.pool = pool_layer(pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """New classifier for ``num_classes`` (0: none) and, unless None, a new pooling type."""
        if pool_type is not None:
            self.pool = pool_layer(pool_type)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def remove_projection(self, in_dim: int) -> None:
        """Drop the 1x1 conv, BN and Swish (their input stage was pruned); ``in_dim`` feeds the pool now."""
        self.proj, self.norm, self.act = nn.Identity(), nn.Identity(), nn.Identity()
        self.num_features = in_dim

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(self.pool(self.act(self.norm(self.proj(x)))))
        if pre_logits or isinstance(self.fc, nn.Identity):
            return x
        if self.pool.is_identity():  # unpooled NCHW: the linear classifier as a 1x1 conv
            return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(x)


class StagedBackbone(nn.Module):
    """Stem, ``stages`` (NCHW in and out) and ``head``: timm's classifier and feature API.

    There is no norm between the stages and the head: an architecture's final norm
    lives at the end of its last stage, so the last stage's output is what
    :meth:`forward_features` returns and what detection and segmentation see.
    Subclasses set ``in_chans`` and ``clusters`` (per stage; empty if the model has no
    clusters) for the input check.
    """

    stem: nn.Module
    stages: nn.Sequential
    head: ClassifierHead
    feature_info: list[dict]
    in_chans: int = 3
    clusters: tuple[int, ...] = ()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes=0``: none, forward returns pooled features).

        ``global_pool``: None keeps the pooling, one of ``"avg"``, ``"max"``, ``"avgmax"``
        selects it, ``""`` disables it (forward then returns (B, head_hidden_size, H, W)
        maps, or per-position logits when ``num_classes > 0``).
        """
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(check_image(x, self.in_chans, self.clusters)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (NCHW, strides 4, 8, 16, 32) alongside the final features.

        ``indices``: None = all four, an int n = the last n, a list = those stages (negative
        counts from the end). ``norm`` is accepted for timm compatibility and changes
        nothing (the final norm is part of the last stage). ``stop_early`` stops after the
        last requested stage (the final features are then that stage's output).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"intermediates are NCHW only, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        intermediates = []
        x = self.stem(check_image(x, self.in_chans, self.clusters))
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and, with ``prune_head``, the head).

        Returns the absolute stage indices. After pruning the head, :meth:`forward` returns
        the last kept stage's (B, C, H, W) output; ``num_features`` is that stage's width.
        ``prune_norm`` changes nothing (there is no norm outside the stages).
        """
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.head.remove_projection(self.feature_info[max_index]["num_chs"])
            self.reset_classifier(0, "")
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        return take_indices
