"""Params and FLOPs of a whole detector or segmentor, counted as the paper counts them (tables 3-5)."""

from __future__ import annotations

import copy
import types
from typing import Any

import torch
from torch import nn

from secvit.complexity import count_flops

__all__ = ["COUNTED_PROPOSALS", "MASKED_ROIS", "model_complexity"]



class _TensorForward(nn.Module):
    """The model's ``mode='tensor'`` forward on a bare image batch (data samples built inside)."""

    def __init__(self, model: nn.Module, sample_cls: type | None, height: int, width: int) -> None:
        super().__init__()
        self.model, self.sample_cls, self.shape = model, sample_cls, (height, width)

    def forward(self, x: torch.Tensor) -> Any:
        samples = None
        if self.sample_cls is not None:
            meta = dict(img_shape=self.shape, ori_shape=self.shape, pad_shape=self.shape,
                        batch_input_shape=self.shape, scale_factor=(1.0, 1.0))
            samples = [self.sample_cls(metainfo=meta) for _ in range(x.shape[0])]
        return self.model(x, samples, mode="tensor")


#: Detections whose masks a FLOP count includes: mmdet's StandardRoIHead.forward (Mask R-CNN) masks the first
#: 100 proposals, as mmdet 2's ``forward_dummy`` did for every RoI head (the paper's counts come from it).
MASKED_ROIS = 100
#: Proposals whose boxes a FLOP count includes: the RPN's 1000 per image of mmdet's test settings, whatever a
#: run's ``roi_scale`` sets (the complexity figures stay the paper's convention in every profile).
COUNTED_PROPOSALS = 1000


def _cascade_tensor_forward(self: Any, x: tuple, rpn_results_list: list, batch_data_samples: list | None = None) -> tuple:
    """Cascade Mask R-CNN's RoI head counted as mmdet 2's ``forward_dummy`` did: every stage's box head on the
    proposals, every stage's mask head on the first :data:`MASKED_ROIS`: 737 GFLOPs for SecViT-S at 1280x800, the
    paper's 738. (mmdet 3's ``CascadeRoIHead.forward`` runs the three mask heads on all 1000 proposals: about 3x that.)"""
    from mmdet.structures.bbox import bbox2roi  # mmdet: heavy, loaded by detectors only

    rois = bbox2roi([r.bboxes for r in rpn_results_list])
    outs: tuple = ()
    for stage in range(self.num_stages):
        boxes = self._bbox_forward(stage, x, rois)
        outs += (boxes["cls_score"], boxes["bbox_pred"])
    if self.with_mask:
        for stage in range(self.num_stages):
            outs += (self._mask_forward(stage, x, rois[:MASKED_ROIS])["mask_preds"],)
    return outs


def model_complexity(cfg: Any, height: int, width: int) -> dict[str, Any]:
    """Params and FLOPs of the whole detector / segmentor of ``cfg`` on one ``height x width`` image.

    FLOPs follow :mod:`secvit.complexity` (fvcore: one multiply-add = one FLOP); ``gflops`` leaves out
    the attention matmuls as the paper's convention does, ``gflops_all_ops`` counts them.
    """
    from mmengine.registry import MODELS, init_default_scope  # heavy: mmengine, loaded to count

    import secvit.downstream.backbone  # noqa: F401  (registers the backbone with mmengine)

    init_default_scope(cfg.get("default_scope", "mmdet"))
    model_cfg = copy.deepcopy(cfg.model)
    if (model_cfg.get("test_cfg") or {}).get("rpn"):
        model_cfg.test_cfg.rpn.max_per_img = COUNTED_PROPOSALS
    with torch.random.fork_rng(devices=[]):
        model = MODELS.build(model_cfg).eval()  # with the config's backbone weights (a file it checks)
    params = sum(p.numel() for p in model.parameters())
    sample_cls = None
    if cfg.get("default_scope") == "mmdet":
        from mmdet.models.roi_heads import CascadeRoIHead  # mmdet: heavy, loaded by detectors only
        from mmdet.structures import DetDataSample as sample_cls

        if isinstance(getattr(model, "roi_head", None), CascadeRoIHead):
            model.roi_head.forward = types.MethodType(_cascade_tensor_forward, model.roi_head)
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        flops, flops_no_attn = count_flops(_TensorForward(model, sample_cls, height, width), x)
    return {
        "params": params,
        "params_m": round(params / 1e6, 2),
        "gflops": round(flops_no_attn / 1e9, 1),
        "gflops_all_ops": round(flops / 1e9, 1),
        "flops_input": f"{height}x{width}",
    }
