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
  unpooled 4-D map.

:func:`seca_attend` runs a :class:`~secvit.models.seca.SECA` module on an NCHW
map with a rotary table for the map's size. Its cluster bookkeeping depends on
the number of tokens, so it is a leaf for ``torch.fx`` (each file that calls it
registers it with ``torch.fx.wrap``).
"""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from secvit.errors import SecvitError
from secvit.models.seca import SECA, RotaryEmbedding2d

__all__ = ["ClassifierHead", "StagedBackbone", "check_image", "init_weights", "pad_to_multiple", "seca_attend"]


def seca_attend(attn: SECA, rope: RotaryEmbedding2d, x: Tensor) -> Tensor:
    """``attn`` on the NCHW map ``x``, with the rotary table built for its height and width."""
    return attn(x, rope(x.shape[-2], x.shape[-1]))


def _stage_side(size: int, stage: int) -> int:
    """Side of stage ``stage``'s map (stride 4, then halving with rounding up) for an input side ``size``."""
    return math.ceil(size / 2 ** (stage + 2))


def check_image(x: Tensor, in_chans: int, clusters: tuple[int, ...]) -> Tensor:
    """``x`` itself if it is a batch of ``in_chans``-channel images big enough for every stage's clusters.

    Raises :class:`SecvitError` otherwise. Register it with ``torch.fx.wrap`` where it is called
    (the checks read the input's shape).
    """
    if x.ndim != 4 or x.shape[1] != in_chans:
        shape = "x".join(map(str, x.shape))
        raise SecvitError(
            f"expected a batch of {in_chans}-channel (RGB) images shaped (B, {in_chans}, H, W), got {shape}; "
            "convert images to RGB first"
        )
    height, width = x.shape[-2:]
    for i, count in enumerate(clusters):
        tokens = _stage_side(height, i) * _stage_side(width, i)
        if tokens < count:
            side = 1
            while any(_stage_side(side, j) ** 2 < c for j, c in enumerate(clusters)):
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


def init_weights(module: nn.Module) -> None:
    """trunc_normal(0.02) for every linear and convolution weight, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ClassifierHead(nn.Module):
    """Optional 1x1 conv + BN + Swish (``hidden``), global average pool, dropout, linear classifier.

    With ``pool_type=''`` the head returns the unpooled NCHW map (after the optional
    1x1 conv block) and has no classifier.
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int | None = None, pool_type: str = "avg", drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if hidden:
            self.pre = nn.Sequential(nn.Conv2d(in_dim, hidden, 1), nn.BatchNorm2d(hidden), nn.SiLU())
        else:
            self.pre = nn.Identity()
        self.num_features = hidden or in_dim
        self.drop = nn.Dropout(drop_rate)
        self.pool_type = ""
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes, pool_type)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            if pool_type not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {pool_type!r}")
            self.pool_type = pool_type
        if not self.pool_type and num_classes > 0:
            raise ValueError("a classifier needs pooled features: use global_pool='avg' with num_classes > 0")
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre(x)
        if not self.pool_type:
            return x
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


class StagedBackbone(nn.Module):
    """Stem, ``stages`` (NCHW in and out), final ``norm`` and ``head``: timm's classifier and feature API."""

    stem: nn.Module
    stages: nn.Sequential
    norm: nn.Module
    head: ClassifierHead
    feature_info: list[dict]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^norm", (99999,))],
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
        self.head.reset(num_classes, global_pool)

    def check_input(self, x: Tensor) -> Tensor:
        """Validate the input image batch (models with clusters override this)."""
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.stages(self.stem(self.check_input(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (NCHW) at ``indices``; with ``norm`` the final norm is applied to the last stage's."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        intermediates = []
        x = self.stem(self.check_input(x))
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if i == last:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last wanted one (and the norm and head as timm does)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head = ClassifierHead(self.num_features, 0, pool_type="")
        if prune_head or prune_end:
            self.head.pre = nn.Identity()
            self.head_hidden_size = self.num_features
            self.reset_classifier(0, "")
        return take_indices
