"""One OpenMMLab backbone for every timm model of this project (mmdet and mmseg).

Configs load it with ``custom_imports = dict(imports=['secvit.downstream.backbone'])`` and use::

    backbone=dict(type='SecvitBackbone', model_name='secvit_small', pretrained='best.pth',
                  out_indices=(0, 1, 2, 3), drop_path_rate=0.15, frozen_stages=-1, norm_eval=False)

The class lives in mmengine's root ``MODELS`` registry, which both ``mmdet.registry.MODELS``
and ``mmseg.registry.MODELS`` fall back to. It returns the stage maps that the timm model's
``forward_intermediates`` gives (contiguous NCHW, strides 4/8/16/32 for the four stages), each through a
LayerNorm (``out_norm``, as Swin's and its family's detection backbones do); it knows nothing
about any one model family.

Importing this module also registers the ``atomic_local`` file backend (checkpoints written
atomically, used by the configs' ``CheckpointHook``). It changes nothing of torch's safe loading:
mmengine's own objects in a resumed checkpoint are allowed only around that one load
(:class:`secvit.downstream.hooks.SafeResumeHook`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from secvit.atomic import atomic_write
from secvit.checkpoint import create_with_weights
from secvit.errors import SecvitError
from secvit.models.registry import create

__all__ = ["SecvitBackbone", "AtomicLocalBackend"]


@register_backend("atomic_local")
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing through a temporary file and a rename."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, lambda tmp: Path(tmp).write_bytes(obj))

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        self.put(obj.encode(encoding), filepath)


@MODELS.register_module()
class SecvitBackbone(BaseModule):
    """A registered timm model of this project as a multi-scale backbone.

    Args:
        model_name: a model of ``secvit list-models`` (or any timm model with ``forward_intermediates``).
        pretrained: ImageNet weights: our pretraining's ``best.pth``/``last.pth``, a released file or
            safetensors; loaded strictly through the family's checkpoint filter (a wrong or missing file is an
            error). None trains the backbone from random initialisation, with a warning (once per process).
        out_indices: stages whose maps are returned.
        drop_path_rate: stochastic depth of the backbone (None: the model's default).
        frozen_stages: -1 trains everything; ``k`` freezes the stem and stages ``0..k`` (weights and norms).
        norm_eval: keep every batch norm (SyncBN included) in eval mode during training.
        out_norm: a LayerNorm on each returned map.
        model_kwargs: further keyword arguments of the timm model (e.g. ``clusters``).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        drop_path_rate: float | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        out_norm: bool = True,
        model_kwargs: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if pretrained is None:
            self._warn_without_weights(model_name)
        elif not Path(pretrained).is_file():
            raise SecvitError(f"model.backbone.pretrained: no file {pretrained}; give the path of {model_name}'s ImageNet weights")
        kwargs = dict(model_kwargs or {})
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        body = create_with_weights(model_name, pretrained, **kwargs) if pretrained else create(model_name, **kwargs)
        if not hasattr(body, "forward_intermediates"):
            raise SecvitError(f"{model_name} has no forward_intermediates; it cannot serve as a detection/segmentation backbone")
        stages = len(body.feature_info)
        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or any(not 0 <= i < stages for i in self.out_indices):
            raise SecvitError(f"out_indices {list(out_indices)} out of range for {model_name}: it has stages 0..{stages - 1}")
        if not -1 <= frozen_stages < stages:
            raise SecvitError(f"frozen_stages={frozen_stages} out of range for {model_name}: use -1..{stages - 1}")
        body.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self.body = body
        self.model_name = model_name
        self.channels = tuple(body.feature_info[i]["num_chs"] for i in self.out_indices)
        self.norms = nn.ModuleList(LayerNorm2d(c) if out_norm else nn.Identity() for c in self.channels)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._freeze()

    _warned_without_weights = False

    @classmethod
    def _warn_without_weights(cls, model_name: str) -> None:
        if cls._warned_without_weights:
            return
        cls._warned_without_weights = True
        print_log(
            f"SecvitBackbone: no ImageNet weights for {model_name} (model.backbone.pretrained=None); the backbone trains "
            "from random initialisation. Set model.backbone.pretrained (e.g. --cfg-options model.backbone.pretrained="
            "runs/<profile>/pretrain/<model>/best.pth), or run through `secvit detect` / `secvit segment`.",
            logger="current", level=logging.WARNING,
        )

    def _frozen_modules(self) -> list[nn.Module]:
        """The body's modules that run before the end of stage ``frozen_stages`` (stem included)."""
        if self.frozen_stages < 0:
            return []
        later = tuple(f"{info['module']}." for info in self.body.feature_info[self.frozen_stages + 1 :])
        leaves = [m for name, m in self.body.named_modules() if not next(m.children(), None) and not f"{name}.".startswith(later)]
        return leaves

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> "SecvitBackbone":
        super().train(mode)
        self._freeze()
        if mode and self.norm_eval:
            for module in self.body.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        feats = self.body.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)
        # contiguous NCHW: a LayerNorm2d leaves its map channels-last in memory, the necks' convs keep that layout,
        # and mmcv's RoIAlign reads its input's buffer as NCHW (channels-last maps gave Mask R-CNN garbage RoI features)
        return tuple(norm(f).contiguous() for norm, f in zip(self.norms, feats))
