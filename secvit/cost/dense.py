"""The work of a detection or segmentation stage: its schedule as the config and the profile's overrides set it,
the pixels of its images, and a two-stage detector's RoI heads, which work per RoI, not per pixel.

The whole model's GFLOPs at the setting's reference size (the paper's printed figure, :mod:`.flops`) less the
RoI heads' share works per pixel of the images as the recipe resizes them; each image adds the RoIs that the
config samples (training) or keeps (testing), at the RoI heads' own rate.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import warnings
from typing import Any

import torch

from secvit.complexity import count_flops
from secvit.cost.flops import Flops, dense_gflops, dense_params
from secvit.cost.work import FVCORE_TRACE_S, Context, RoIWork, Work
from secvit.data.synthetic import COCO_OBJECTS
from secvit.downstream.complexity import COUNTED_PROPOSALS, MASKED_ROIS
from secvit.downstream.config import DETECTION_CONFIGS, SEGMENTATION_CONFIGS, Overrides, config_file, scale_roi_counts
from secvit.params import from_section
from secvit.study import Stage

__all__ = ["dense_work", "detector_training_gflops", "roi_work"]

#: The dense settings' reference input (height, width) of the paper's FLOPs: detectors at 1280x800
#: (tables 3-4 do not say; the common convention), segmentors as params.yaml `flops_size`.
DETECTION_SIZE = (800, 1280)
#: What a detection or segmentation stage does on its CPU before its first iteration, besides imports:
#: resolving the config's ``mmdet::``/``mmseg::`` bases and building the runner (environment report, model,
#: datasets, hooks). 2.4-6.8 s for the smoke profile's Mask R-CNN, Cascade Mask R-CNN, RetinaNet, UperNet
#: and Semantic FPN stages (EPYC host).
DENSE_RUNNER_S = 4.0
#: The recipes' image sizes (mmdet's and mmseg's base configs): detection resizes into 1333x800, ADE20K
#: into 2048x512 and trains on 512x512 crops. Real images are taken as 4:3 (COCO's and ADE20K's typical).
DETECTION_SCALE, SEGMENTATION_SCALE, SEGMENTATION_CROP, REAL_ASPECT = (1333, 800), (2048, 512), 512, 4 / 3
#: Test-time cost of the multi-scale + flip test relative to one single-scale test: 6 scales
#: (0.5-1.75, mean area 1.45x) x 2 flips.
MS_FLIP_FACTOR = 2 * (0.5**2 + 0.75**2 + 1 + 1.25**2 + 1.5**2 + 1.75**2) / 6
#: Objects per training image of COCO train2017 (860,001 instances in 118,287 images); generated sets:
#: secvit.data.synthetic.COCO_OBJECTS.
COCO_OBJECTS_PER_IMAGE = 7.27
#: Positive RoIs per object that a two-stage detector's sampler draws per stage in training (its mask head's
#: RoIs; at most the sampler's positive fraction): an assumption. Smoke runs (untrained heads, 2 objects an image)
#: drew 6.7 (Mask R-CNN) and 2.9 a stage (Cascade) from 512 sampled RoIs, 2.4 and 1.7 from 64 (roi_scale 1/8).
POSITIVES_PER_OBJECT = 5.0


@functools.lru_cache(maxsize=None)
def read_config(path: str) -> Any:
    """An OpenMMLab config, its ``mmdet::``/``mmseg::`` bases resolved (read once per file)."""
    from mmengine.config import Config  # heavy: mmengine, loaded to read the dense configs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Config.fromfile(path)


def schedule(stage: Stage, pattern: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Length, validation interval, batch per device and whether the config counts epochs, as the
    stage runs it: the config's values with the profile's overrides."""
    s = from_section(Overrides, overrides, f"{stage.profile}.{'detection' if stage.kind == 'detect' else 'segmentation'}.overrides")
    path, _ = config_file(pattern, stage.model)
    cfg = read_config(str(path))
    loop = cfg.train_cfg
    by_epoch = loop.get("type", "EpochBasedTrainLoop") == "EpochBasedTrainLoop"
    length = s.length if s.length is not None else loop.get("max_epochs" if by_epoch else "max_iters")
    return {
        "config": str(path), "by_epoch": by_epoch, "length": length, "val_every": s.val_every or loop.get("val_interval", 1),
        "batch_per_device": s.batch_per_device or cfg.train_dataloader.batch_size, "image_scale": s.image_scale,
        "roi_scale": s.roi_scale, "checkpoint_every": s.checkpoint_every or cfg.default_hooks.checkpoint.get("interval", 1),
        # what iteration-based runs keep at any device count
        "global_batch": s.global_batch or (cfg.get("auto_scale_lr") or {}).get("base_batch_size"),
    }


def _head_gflops(head: dict[str, Any], extractor: dict[str, Any], flops: Flops) -> float:
    """GFLOPs of an mmdet RoI head on one RoI (fvcore), the RoI as its extractor pools it."""
    channels, size = extractor["out_channels"], extractor["roi_layer"]["output_size"]

    def count() -> float:
        from mmdet.registry import MODELS  # heavy: mmdet, loaded only when a head is not in the cache
        from mmengine.registry import DefaultScope
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        # in mmdet's scope whatever scope the process is in (an mmseg run before this one leaves mmseg's)
        with DefaultScope.overwrite_default_scope("mmdet"), torch.random.fork_rng(devices=[]), torch.no_grad():
            module = MODELS.build(dict(head)).eval()
            return count_flops(module, torch.zeros(1, channels, size, size))[0] / 1e9

    return flops.cached(f"roi|{json.dumps(head, sort_keys=True)}|{channels}|{size}", count)


def roi_work(path: str, roi_scale: float, objects: float, flops: Flops, mask_heads: int | None = None) -> RoIWork:
    """The RoI heads' work per image in ``path``'s detector with its RoI counts scaled by ``roi_scale`` (none for a
    one-stage detector): the sampled RoIs in training, of which ``objects`` x :data:`POSITIVES_PER_OBJECT` positive
    (masked), at most the sampler's positive fraction; the RPN's proposals and the kept detections in testing.
    ``mask_heads``: how many of a cascade's stages have a mask head (None: every stage, as mmdet builds it;
    detectron2's Cascade has one)."""
    cfg = copy.deepcopy(read_config(path))  # the cached config stays as its file says
    scale_roi_counts(cfg, roi_scale)
    model = cfg.model
    head = model.get("roi_head")
    if not head:
        return RoIWork()
    stages = head.get("num_stages", 1)
    boxes = head.bbox_head if isinstance(head.bbox_head, list) else [head.bbox_head] * stages
    box = [_head_gflops(b.to_dict(), head.bbox_roi_extractor.to_dict(), flops) for b in boxes]
    mask = _head_gflops(head.mask_head.to_dict(), head.mask_roi_extractor.to_dict(), flops) if head.get("mask_head") else 0.0
    samplers = [r.sampler for r in (model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn] * stages)]
    proposals, detections = model.test_cfg.rpn.max_per_img, model.test_cfg.rcnn.max_per_img
    masked = stages if mask_heads is None else mask_heads  # the first stages' (detectron2 masks its first stage's positives)
    positives = [min(s.num * s.pos_fraction, objects * POSITIVES_PER_OBJECT) for s in samplers]
    train = sum(s.num * g for s, g in zip(samplers, box)) + sum(positives[:masked]) * mask
    return RoIWork(train, sum(proposals * g for g in box) + masked * detections * mask,
                   sum(COUNTED_PROPOSALS * g for g in box) + masked * MASKED_ROIS * mask)


def _fit(height: float, width: float, scale: tuple[int, int]) -> float:
    """The area of a ``height x width`` image resized, keeping its ratio, to fit ``scale`` (long, short side)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return height * width * factor**2


def dense_areas(task: str, generated: dict[str, Any] | None, image_scale: float) -> tuple[float, float]:
    """Pixels of one test image and of one training image as a dense stage sees them: the recipe's
    resize (scaled by ``image_scale``) of the generated images, or of a typical 4:3 real image; the
    segmentation recipe trains on crops."""
    base = DETECTION_SCALE if task == "detection" else SEGMENTATION_SCALE
    scale = (round(base[0] * image_scale), round(base[1] * image_scale))
    height, width = generated["size"] if generated else (3.0, 3.0 * REAL_ASPECT)
    test = _fit(height, width, scale)
    train = test if task == "detection" else min(test, (SEGMENTATION_CROP * image_scale) ** 2)
    return test, train


def _image_gflops(task: str, at_ref: float, ref: tuple[int, int], roi: RoIWork, generated: dict[str, Any] | None,
                 image_scale: float) -> tuple[float, float]:
    """Forward GFLOPs of one training and one test image outside the RoI heads: the whole model's ``at_ref`` on one
    ``ref`` image less the RoI heads' share as counted (``roi.counted``) works per pixel of the images as the
    recipe resizes them (:func:`dense_areas`)."""
    per_pixel = (at_ref - roi.counted) / (ref[0] * ref[1])
    test_area, train_area = dense_areas(task, generated, image_scale)
    return per_pixel * train_area, per_pixel * test_area


def detector_training_gflops(path: str, at_ref: float, flops: Flops, mask_heads: int | None = None) -> float:
    """Forward GFLOPs of one training image of ``path``'s detector, whose whole-model count on one
    :data:`DETECTION_SIZE` image is ``at_ref``, at the full recipe (real COCO images, no image or RoI scaling):
    what a detection stage's ``gflops_per_image`` is (:func:`dense_work` and :func:`secvit.cost.plan.stage_cost`:
    the image outside the RoI heads plus their training work). Published detectors are counted with it
    (:mod:`secvit.cost.references`)."""
    roi = roi_work(path, 1.0, COCO_OBJECTS_PER_IMAGE, flops, mask_heads)
    return _image_gflops("detection", at_ref, DETECTION_SIZE, roi, None, 1.0)[0] + roi.train


def dense_work(stage: Stage, ctx: Context) -> Work:
    """A detection or segmentation stage: its schedule's images trained and tested per pixel and per RoI,
    its checkpoints, the runner's start, and its own FLOP count of the whole model (``metrics.json``)."""
    model, rate = stage.model, ctx.rate
    detection = stage.kind == "detect"
    task = "detection" if detection else "segmentation"  # either lane's
    dataset = "coco" if detection else "ade20k"
    setting = {k: v for k, v in stage.options if k in ("detector", "schedule", "head")}
    pattern = DETECTION_CONFIGS[(setting["detector"], setting["schedule"])] if detection else SEGMENTATION_CONFIGS[setting["head"]]
    settings = ctx.section(task)
    sched = schedule(stage, pattern, settings["overrides"])
    table = stage.tables[0]  # the paper's table of this setting prints the reference figures
    row_ref = DETECTION_SIZE if detection else tuple(settings["flops_size"]["default"])
    ref = DETECTION_SIZE if detection else tuple(settings["flops_size"].get(model, row_ref))
    at_ref = dense_gflops(table, setting, model, ref, row_ref, ctx.flops)  # the whole model on one image of the reference size
    generated = (ctx.data.generate or {}).get(dataset)
    objects = sum(COCO_OBJECTS) / 2 if generated else COCO_OBJECTS_PER_IMAGE
    roi = roi_work(sched["config"], sched["roi_scale"], objects, ctx.flops) if detection else RoIWork()
    train_gflops, test_gflops = _image_gflops(task, at_ref, ref, roi, generated, sched["image_scale"])
    # epochs of the training split, or iterations of the global batch on any device count (secvit.downstream.config)
    trained = sched["length"] * (ctx.data.images(dataset, "train") if sched["by_epoch"] else sched["global_batch"])
    # mmengine validates every val_every and after the last iteration; that last validation is the test
    # (secvit.downstream.runner.train_and_test), and the multi-scale + flip test is one more
    tests = math.ceil(sched["length"] / sched["val_every"]) + (MS_FLIP_FACTOR if settings.get("ms_flip") else 0)
    # each checkpoint: weights and AdamW's two moments (float32); a finished run rewrites its last one, weights only
    checkpoints = 3 * math.ceil(sched["length"] / sched["checkpoint_every"]) + 1
    return Work(
        train_gflops, trained, int(ctx.data.images(dataset, "val") * tests), test_gflops, roi,
        extra_s=FVCORE_TRACE_S + at_ref / rate.eval_rate(at_ref),  # the stage's own FLOP count of the whole model
        checkpoint_bytes=dense_params(table, setting, model, ctx.flops) * 4 * checkpoints,
        startup_s=rate.dense_startup_s + DENSE_RUNNER_S,
    )
