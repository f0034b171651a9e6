"""The plan against published training costs of comparable hierarchical backbones.

Each :class:`Published` figure is a training cost someone measured and published, with its source: the GPU
seconds of training per image (wall time x GPUs / images), on V100s. It is set against every planned stage of
its kind and setting as the plan's device-seconds per trained image (all of the stage: start-up, evaluation,
checkpoints) over the published figure converted to the plan's GPU (:data:`V100_PER_A100`) and scaled by
FLOPs (the stage's GFLOPs per image over the published model's). Only figures whose numbers could be checked
at their source are here, with FLOPs counted here where the source prints none (``python -m
secvit.bench.references``); :data:`UNCHECKED` says which stage kinds have none, and why.

Both sides of a ratio count GFLOPs per image alike (:data:`CONVENTION`). A pretraining figure's are one forward pass
of a 224x224 image, as SecViT's table 1 prints them, and a pretraining stage's are its model's fvcore count at its
recipe's size (224 in the paper's recipe). A detector's are its training work per image: detectron2 prints no FLOPs,
so mmdet's R50 config of the detector is counted whole and its training work derived from that count by the function
that gives a detection stage's own (:func:`secvit.cost.dense.detector_training_gflops`).

Plain ViTs (DeiT) are left out on purpose: they run more FLOPs per second than windowed attention, so they
would make SecViT's rates look slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from secvit.cost.rates import H100_OVER_A100

if TYPE_CHECKING:  # the plan imports this module
    from secvit.cost.plan import Plan, StageCost

__all__ = ["CONVENTION", "GPU_RATIO_SOURCE", "MMDET_VERSION", "PUBLISHED", "UNCHECKED", "V100_PER_A100", "Comparison", "Counted",
           "Published", "compare"]

#: The training work of one A100 in V100s, with automatic mixed precision: NVIDIA's stated 2x for AMP/FP16
#: training (A100 launch material; an assumption, the weakest figure of the comparison); the memory bandwidth ratio,
#: 1555/900 GB/s = 1.7, bounds it from below for memory-bound layers.
V100_PER_A100 = 2.0
GPU_RATIO_SOURCE = ("assumed: NVIDIA's stated 2x training speed of the A100 over the V100 with mixed precision (A100 "
                    "launch material); memory bandwidth 1555 vs 900 GB/s (the two GPUs' data sheets) bounds it from below")
IMAGENET_TRAIN = 1_281_167
COCO_TRAIN_BATCH = 16  # detectron2's 1x/3x schedules: 16 images per iteration on 8 GPUs
#: The mmdet whose bundled configs the figures counted here come from (requirements.lock's pin).
MMDET_VERSION = "3.3.0"


#: What the GFLOPs per image on both sides of a comparison are, per stage kind.
CONVENTION = {
    "pretrain": "one forward pass of a 224x224 image (SecViT's table 1; a pretraining stage: its model at its recipe's "
                "size, secvit.cost.work.pretrain_work)",
    "detect": "one training image's work, as a detection stage counts its own (secvit.cost.dense.detector_training_gflops: "
              "a 4:3 COCO image resized into 1333x800, the RoIs its sampler draws, masks on the positives)",
}


@dataclass(frozen=True)
class Counted:
    """A published detector counted here (``python -m secvit.bench.references``) on mmdet's R50 config of it."""

    config: str  # mmdet's bundled config, mmdet::<config>
    whole_gflops: float  # the whole model on one 1280x800 image (1000 proposals), the paper tables' convention
    mask_heads: int | None = None  # a cascade's mask heads (None: the config's, one per stage)


@dataclass(frozen=True)
class Published:
    """A published training cost: ``kind`` and ``setting`` (a stage-name suffix such as ``-mask_rcnn-1x``; empty: every
    stage of the kind) say which planned stages it is set against. ``gflops`` are per image in the convention of
    :data:`CONVENTION` for ``kind``, that of those stages' ``gflops_per_image``; a detector's are derived from its
    ``counted`` whole-model count."""

    kind: str
    setting: str
    model: str
    gflops: float
    gflops_source: str
    v100_s_per_image: float  # V100-seconds of training per image
    measured: str  # the published figure, in words
    source: str
    counted: Counted | None = None


def _counted(counted: Counted, note: str = "") -> str:
    return (f"training work per image, counted here (`python -m secvit.bench.references`) on mmdet {MMDET_VERSION}'s "
            f"mmdet::{counted.config}{note}: {counted.whole_gflops:g} GFLOPs whole at 1280x800")


MASK_RCNN = Counted("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", 259.8)
RETINANET = Counted("retinanet/retinanet_r50_fpn_1x_coco.py", 239.0)
#: detectron2's Cascade has one mask head (on the first stage's positives); mmdet's config one per stage
CASCADE = Counted("cascade_rcnn/cascade-mask-rcnn_r50_fpn_ms-3x_coco.py", 287.4, mask_heads=1)
DETECTRON2 = "https://github.com/facebookresearch/detectron2/blob/main/MODEL_ZOO.md"

PUBLISHED = (
    Published("pretrain", "", "Swin-B (300 epochs, ImageNet-1K)", 15.4, "Swin's paper, as SecViT's table 1 prints it",
              16 * 12 * 60 / IMAGENET_TRAIN, "16 V100, about 12 min per epoch (Swin's authors)",
              "https://github.com/microsoft/Swin-Transformer/issues/68"),
    Published("pretrain", "", "PVTv2-b5 (ImageNet-1K)", 11.4, "PaddleClas's PVTv2 model card (docs/zh_CN/models/PVTV2.md)",
              8 * 25 * 60 / IMAGENET_TRAIN, "8 V100, about 25 min per epoch (PVT's authors)", "https://github.com/whai362/PVT/issues/83"),
    # The whole-model counter is checked on printed figures: mmdet's R50 Mask R-CNN gives 259.8 (LocalMamba's paper,
    # arXiv 2403.09338, prints 260 at 1280x800), and the Cascade with the SecViT stage's 4conv1fc box heads (Swin's
    # recipe) 82.2M and 738.3 (Swin's paper, table 2(b), prints 82M and 739G for R50). No source of an R50 RetinaNet
    # figure could be checked; its 20.8 below Mask R-CNN matches the gap that SecViT's table 4 prints between the two
    # detectors of one backbone (18-19 GFLOPs).
    *(Published("detect", setting, f"Mask R-CNN R50-FPN {name} (detectron2)", 187.0, _counted(MASK_RCNN, " (LocalMamba prints 260)"),
                0.261 * 8 / COCO_TRAIN_BATCH, "0.261 s/iter on 8 V100, 16 images per iteration", DETECTRON2, MASK_RCNN)
      for setting, name in (("-mask_rcnn-1x", "1x"), ("-mask_rcnn-3x_ms", "3x"))),  # one figure: detectron2 times both alike
    Published("detect", "-retinanet-1x", "RetinaNet R50-FPN 1x (detectron2)", 199.2, _counted(RETINANET),
              0.205 * 8 / COCO_TRAIN_BATCH, "0.205 s/iter on 8 V100, 16 images per iteration", DETECTRON2, RETINANET),
    Published("detect", "-cascade_mask_rcnn-3x_ms", "Cascade Mask R-CNN R50-FPN 3x (detectron2)", 201.2,
              _counted(CASCADE, " with detectron2's one mask head"), 0.328 * 8 / COCO_TRAIN_BATCH,
              "0.328 s/iter on 8 V100, 16 images per iteration", DETECTRON2, CASCADE),
)

#: Stage kinds and settings without a checkable published figure, and why.
UNCHECKED = (
    ("segment", "mmseg's Swin UperNet tables give memory and inference fps, no training time; none found for Semantic FPN"),
)


@dataclass(frozen=True)
class Comparison:
    reference: Published
    stage: str
    ratio: float  # planned device-seconds per image / the published figure on the plan's GPU at the stage's FLOPs


def _gpu_in_v100s(device: str) -> float | None:
    """V100s per device of the plan's rates (None: a device the published V100 figures cannot be converted to)."""
    if "A100" in device:
        return V100_PER_A100
    if "H100" in device:
        return V100_PER_A100 * H100_OVER_A100
    return None


def compare(plan: Plan) -> list[Comparison]:
    """Every planned GPU stage against each published figure of its kind and setting (empty on other devices), their
    GFLOPs per image in one convention (:data:`CONVENTION`)."""
    gpus = _gpu_in_v100s(plan.throughput.device)
    if gpus is None:
        return []
    found = []
    for ref in PUBLISHED:
        for stage in plan.stages:
            if stage.kind == ref.kind and stage.stage.endswith(ref.setting) and stage.train_images and stage.device_kind == "GPU":
                found.append(Comparison(ref, stage.stage, _per_image(stage) / (ref.v100_s_per_image / gpus * stage.gflops_per_image / ref.gflops)))
    return found


def _per_image(stage: StageCost) -> float:
    return stage.device_hours * 3600 / stage.train_images
