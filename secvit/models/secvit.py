"""SecViT: Semantic Equitable Clustering Vision Transformer.

"Semantic Equitable Clustering: A Simple, Fast and Effective Strategy for Vision
Transformer", Fan et al., 2024 (arXiv 2405.13337).

The architecture is the released (trained) one: a four-convolution stem, four
stages of pre-norm blocks (CPE, SECA, convolutional FFN), strided 3x3 convolutions
between stages, and a 1x1 conv + BN + Swish head. Stage inputs and outputs are NCHW; inside a stage the blocks run on channels-last maps.
Released checkpoints load through :func:`checkpoint_filter_fn`.

The ablations of the paper's table 6 are constructor options (timm kwargs, e.g.
``timm.create_model("secvit_tiny", lce=False)``; :data:`secvit.models.variants.ABLATIONS`
names them): ``attention="cswsa"`` (cross-shaped window attention in place of SECA,
:mod:`secvit.models.cswsa`), ``lce=False``, ``cpe=False`` and ``conv_stem=False`` (a plain
patch embedding, :class:`PatchStem`, in place of the convolutional stem). The defaults are
the released architecture.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from secvit.errors import SecvitError
from secvit.models.cswsa import CSWSA, STRIPES
from secvit.models.kernels import cache_block
from secvit.models.seca import SECA, DepthwiseConv, PointwiseConv, RotaryEmbedding2d
from secvit.models.staged import SEC_PAPER, ClassifierHead, StagedBackbone, build, imagenet_cfg, init_weights
from secvit.models.variants import VARIANTS  # plain data, shared with secvit.tables

__all__ = ["SecViT", "checkpoint_filter_fn", "VARIANTS"]


def _conv_bn(cin: int, cout: int, stride: int, act: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.GELU()) if act else nn.Sequential(*layers)


class Stem(nn.Sequential):
    """Stride-4 convolutional stem: four 3x3 conv + BN (GELU after the first three), strides 2, 1, 1, 2."""

    def __init__(self, in_chans: int, width: int) -> None:
        half = width // 2
        super().__init__(
            _conv_bn(in_chans, half, 2, act=True),
            _conv_bn(half, half, 1, act=True),
            _conv_bn(half, half, 1, act=True),
            _conv_bn(half, width, 2, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        # channels-last memory: oneDNN's convolutions are faster on it, and stage 1 then
        # takes the stem's output as its channels-last map without a copy
        return super().forward(x.contiguous(memory_format=torch.channels_last))


@torch.fx.wrap
def _pad_to_stride(x: Tensor, stride: int) -> Tensor:
    """Zero-pad NCHW images at the bottom and right to multiples of ``stride`` (a no-op when they are)."""
    return F.pad(x, (0, -x.shape[-1] % stride, 0, -x.shape[-2] % stride))


class PatchEmbed(nn.Sequential):
    """Non-overlapping patch embedding: a ``patch`` x ``patch`` conv with that stride, then BN.

    The input is zero-padded at the bottom and right to multiples of ``patch`` first, so a
    side of n becomes ceil(n / patch) as with the overlapping strided convs it replaces.
    """

    def __init__(self, in_dim: int, dim: int, patch: int) -> None:
        super().__init__(nn.Conv2d(in_dim, dim, patch, patch), nn.BatchNorm2d(dim))
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_pad_to_stride(x, self.patch))


class PatchStem(nn.Sequential):
    """Table 6's "w/o Conv Stem": a 4x4 stride-4 :class:`PatchEmbed` in place of the conv stem.

    ``stem.0.0`` is the first conv as in :class:`Stem`. The ablation also turns the 3x3
    stride-2 convs between stages into 2x2 patch merging (see :class:`SecViT`). BN as between
    the stages (the paper does not say which norm it used).
    """

    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__(PatchEmbed(in_chans, width, 4))


class ConvFFN(nn.Module):
    """1x1 expand, GELU, residual 3x3 depthwise conv, 1x1 project, on channels-last maps (B, H, W, C)."""

    def __init__(self, dim: int, ratio: int = 3) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1 = PointwiseConv(dim, hidden, gelu=True)
        self.dwconv = DepthwiseConv(hidden, 3, residual=True)
        self.fc2 = PointwiseConv(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)  # gelu(fc1(x)), one oneDNN call in fp32 CPU inference
        x = self.dwconv(x)  # x + dwconv(x)
        return self.fc2(x)


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch on channels-last maps (B, H, W, C).

    ``gamma`` is held as (1, 1, 1, C), of the rank of the release's (1, C, 1, 1) parameter, so that the
    recipe's weight-decay rule (timm's: no decay on biases and 1-D parameters) decays it, as the
    release's training did (a (C,) gamma would be left undecayed)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, 1, 1, dim), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class SecBlock(nn.Module):
    """x += CPE(x); x += SECA(LN(x)); x += FFN(LN(x)) (with optional layer scale and drop path).

    Works on channels-last maps (B, H, W, C): the 1x1 convolutions of the released model
    run as linear maps on the channel dim, without layout changes inside the block.
    Ablations: ``cpe=False`` drops the CPE, ``stripe`` (an int) puts cross-shaped window
    attention with that stripe width in SECA's place, ``lce=False`` drops the attention's LCE.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        clusters: int,
        drop_path: float,
        layer_scale: float | None,
        cpe: bool = True,
        lce: bool = True,
        stripe: int | None = None,
    ) -> None:
        super().__init__()
        self.cpe = DepthwiseConv(dim, 3, residual=True) if cpe else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SECA(dim, heads, clusters, lce=lce) if stripe is None else CSWSA(dim, heads, stripe, lce=lce)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvFFN(dim)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, tables: Tensor) -> Tensor:
        if self.cpe is not None:
            x = self.cpe(x)  # x + cpe(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), tables)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def cluster_assignment(self, x: Tensor, tables: Tensor) -> Tensor:
        """Cluster index of every token per head (B, heads, H, W) in this block's attention."""
        return self.attn.cluster_assignment(self.norm1(x if self.cpe is None else self.cpe(x)), tables)


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
        patch_merging: bool = False,
        **block_options,
    ) -> None:
        super().__init__()
        if not downsample:
            self.downsample = nn.Identity()
        elif patch_merging:  # the "w/o Conv Stem" ablation: 2x2 stride-2 patch merging
            self.downsample = PatchEmbed(in_dim, dim, 2)
        else:
            self.downsample = nn.Sequential(nn.Conv2d(in_dim, dim, 3, 2, 1), nn.BatchNorm2d(dim))
        self.rope = RotaryEmbedding2d(dim // heads)
        self.scale = (dim // heads) ** -0.5
        self.blocks = nn.ModuleList(SecBlock(dim, heads, clusters, dp, layer_scale, **block_options) for dp in drop_paths)
        self.grad_checkpointing = False

    def tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Downsampled channels-last map (B, H, W, C) and the rotary tables of its size."""
        x = self.downsample(x).permute(0, 2, 3, 1).contiguous()
        return x, self.rope.qkv_tables(x.shape[1], x.shape[2], self.scale)

    def forward(self, x: Tensor) -> Tensor:
        x, tables = self.tokens(x)
        step = cache_block(x)
        if step:  # a few images at a time through all blocks (every block is per image)
            return torch.cat([self.run_blocks(part, tables) for part in x.split(step)]).permute(0, 3, 1, 2)
        return self.run_blocks(x, tables).permute(0, 3, 1, 2)

    def run_blocks(self, x: Tensor, tables: Tensor) -> Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, tables, use_reentrant=False)
            else:
                x = block(x, tables)
        return x


ATTENTIONS = ("seca", "cswsa")


class SecViT(StagedBackbone):
    """SecViT backbone and classifier (timm interface).

    Ablation options (table 6; the defaults are the released model): ``attention`` ``"seca"``
    or ``"cswsa"`` (cross-shaped window attention with ``stripes`` per stage; ``clusters`` is
    then unused and the model has no minimum input size), ``lce``, ``cpe`` and ``conv_stem``.
    ``conv_stem=False`` replaces every overlapping convolutional downsampling by a plain patch
    embedding: :class:`PatchStem` (4x4, stride 4) and 2x2 stride-2 patch merging between the
    stages (Swin-style). Only this reading gives table 6's 14M params and 2.1 GFLOPs for
    SecViT-T; replacing the stem alone gives 14.95M and 2.22G.

    timm's classifier and feature interface (``forward_intermediates``, ``reset_classifier``,
    input checks, ...) come from :class:`~secvit.models.staged.StagedBackbone`.
    """

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
        attention: str = "seca",
        stripes: tuple[int, ...] = STRIPES,
        lce: bool = True,
        cpe: bool = True,
        conv_stem: bool = True,
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise SecvitError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.head_hidden_size = head_hidden_size
        cross = attention == "cswsa"
        self.in_chans = in_chans
        self.clusters = tuple(1 for _ in widths) if cross else tuple(clusters)
        self.stem = (Stem if conv_stem else PatchStem)(in_chans, widths[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
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
                    patch_merging=not conv_stem,
                    cpe=cpe,
                    lce=lce,
                    stripe=stripes[i] if cross else None,
                )
            )
            start += depth
            self.feature_info.append(dict(num_chs=width, reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(widths[-1], num_classes, head_hidden_size, global_pool, drop_rate)
        self.apply(init_weights)


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


#: The inverse of :data:`_RENAMES`: our names -> the released checkpoints'.
_TO_RELEASED: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"^stem\.(\d+)\.(\d+)\.", lambda m: f"patch_embed.proj.{int(m.group(1)) * 3 + int(m.group(2))}."),
    (r"^stages\.(\d+)\.downsample\.0\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.reduction."),
    (r"^stages\.(\d+)\.downsample\.1\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.norm."),
    (r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks."),
    (r"\.cpe\.", ".pos."),
    (r"\.norm([12])\.", r".norm\1.norm."),
    (r"\.attn\.lce\.", ".attn.lepe."),
    (r"\.attn\.proj\.", ".attn.out_proj."),
    (r"\.mlp\.", ".ffn."),
    (r"\.ls([12])\.gamma$", r".gamma_\1"),
    (r"^head\.proj\.", "proj."),
    (r"^head\.norm\.", "norm."),
    (r"^head\.fc\.(weight|bias)$", r"head.\1"),
]


def to_released_layout(model: SecViT) -> dict[str, Tensor]:
    """A SecViT model's weights under the released checkpoints' names and shapes (with their rotary tables): the
    inverse of :func:`checkpoint_filter_fn` (it writes the smoke profile's stand-in for a released checkpoint)."""
    out: dict[str, Tensor] = {}
    for name, value in model.state_dict().items():
        for pattern, repl in _TO_RELEASED:
            name = re.sub(pattern, repl, name)
        if name == "head.weight":
            value = value[:, :, None, None]  # linear classifier -> the released 1x1 conv
        elif re.search(r"\.gamma_[12]$", name):
            value = value.reshape(1, -1, 1, 1)  # channels-last layer scale -> the released (1, C, 1, 1)
        out[name] = value.detach().clone()
    for i, stage in enumerate(model.stages):
        out[f"layers.{i}.RoPE.angle"] = stage.rope.angle.detach().clone()
    return out


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
        elif new.endswith(".gamma") and new in target and value.shape != target[new].shape:
            value = value.reshape(target[new].shape)  # (1, C, 1, 1) layer scale -> channels-last (1, 1, 1, C)
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
    return imagenet_cfg("stem.0.0", 0.875, license="apache-2.0", origin_url="https://github.com/qhfan/SecViT", **SEC_PAPER, **kwargs)


default_cfgs = generate_default_cfgs({f"{name}.in1k": _cfg() for name in VARIANTS})


def _create(variant: str, pretrained: bool = False, **kwargs) -> SecViT:
    # features_only: FeatureGetterNet over forward_intermediates (pruned to the last requested stage,
    # input validation kept); feature_cls="fx" also works
    return build(SecViT, variant, pretrained, VARIANTS[variant], pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


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
