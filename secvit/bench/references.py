"""``python -m secvit.bench.references``: the FLOPs of the published detectors that the cost plan is checked against
(:mod:`secvit.cost.references`), where their source prints none, and their training work per image.

detectron2's model zoo gives the training time of its R50-FPN detectors: Mask R-CNN, RetinaNet 1x and Cascade Mask
R-CNN 3x. MMDetection bundles the same detectors as R50 configs. Each is counted here in two conventions:

- the paper tables' (which is also the dense stages' own count, :func:`secvit.downstream.complexity.model_complexity`):
  the whole model on one 3x800x1280 image, the RPN's 1000 proposals through every box head and the first 100 through
  each mask head, with fvcore. No weights are loaded;
- the plan's: the training work of one image, as a detection stage counts its own ``gflops_per_image``
  (:func:`secvit.cost.dense.detector_training_gflops`: a real 4:3 image at the recipe's 1333x800, the RoIs its
  sampler draws, masks on the positives). These are the figures the plan is scaled by.

detectron2's Cascade Mask R-CNN has one mask head (its ``CascadeROIHeads`` keeps Mask R-CNN's, on the first stage's
positives), while mmdet's has one per stage, so it is counted with one.

The whole-model counter is checked against printed figures on two configs. mmdet's R50 Mask R-CNN should give
LocalMamba's 260 GFLOPs. The Cascade with the SecViT stage's own box heads (Swin's recipe: 4conv1fc) should give Swin's
R50 row, 82M parameters and 739 GFLOPs (Swin's paper, table 2(b)).

It prints one line per detector. The figures on the lines named by a setting go into
:data:`secvit.cost.references.PUBLISHED`.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import fvcore
import torch

from secvit.cost.dense import DETECTION_SIZE, detector_training_gflops, read_config, roi_work
from secvit.cost.flops import Flops
from secvit.cost.references import CASCADE, MASK_RCNN, RETINANET
from secvit.downstream.complexity import model_complexity
from secvit.downstream.config import DETECTION_CONFIGS, config_file

__all__ = ["count", "mmdet_config", "one_mask_head", "rows"]


def mmdet_config(name: str) -> str:
    """The path of one of mmdet's bundled configs, ``mmdet::<name>``."""
    import mmdet  # heavy: mmdet, loaded to find its configs

    return str(Path(mmdet.__file__).parent / ".mim" / "configs" / name)


def count(cfg: Any) -> tuple[float, float]:
    """Parameters (millions) and GFLOPs of ``cfg``'s detector on one image of the dense stages' reference size."""
    result = model_complexity(cfg, *DETECTION_SIZE)
    return result["params"] / 1e6, result["gflops"]


def one_mask_head(path: str, gflops: float, flops: Flops) -> float:
    """The whole-model count ``gflops`` of ``path``'s Cascade Mask R-CNN with detectron2's mask heads
    (:data:`CASCADE`: one) instead of one per stage (its RoI heads' counted share, :func:`roi_work`)."""
    return gflops - roi_work(path, 1.0, 0.0, flops).counted + roi_work(path, 1.0, 0.0, flops, CASCADE.mask_heads).counted


Row = tuple[str, str, float | None, float, float | None, str]


def rows() -> list[Row]:
    """(settings of :data:`secvit.cost.references.PUBLISHED`, or ``check``; detector; parameters in millions, where
    counted; whole-model GFLOPs on one 1280x800 image; training GFLOPs per image, where recorded; where from) for each
    counted detector."""
    flops = Flops(None)
    retina, cascade, mask = mmdet_config(RETINANET.config), mmdet_config(CASCADE.config), mmdet_config(MASK_RCNN.config)
    retina_n, mask_n, cascade_n = count(read_config(retina)), count(read_config(mask)), count(read_config(cascade))
    detectron2 = one_mask_head(cascade, cascade_n[1], flops)
    swin = copy.deepcopy(read_config(cascade))
    ours = read_config(str(config_file(DETECTION_CONFIGS[("cascade_mask_rcnn", "3x_ms")], "secvit_small")[0]))
    swin.model.roi_head.bbox_head = copy.deepcopy(ours.model.roi_head.bbox_head)
    return [
        ("-retinanet-1x", "R50-FPN RetinaNet", *retina_n, detector_training_gflops(retina, retina_n[1], flops), f"mmdet::{RETINANET.config}"),
        ("-mask_rcnn-1x -mask_rcnn-3x_ms", "R50-FPN Mask R-CNN (LocalMamba prints 260)", *mask_n,
         detector_training_gflops(mask, mask_n[1], flops), f"mmdet::{MASK_RCNN.config}"),
        ("-cascade_mask_rcnn-3x_ms", "R50-FPN Cascade Mask R-CNN, one mask head (detectron2's)", None, detectron2,
         detector_training_gflops(cascade, detectron2, flops, CASCADE.mask_heads), f"mmdet::{CASCADE.config} with one mask head"),
        ("check", "R50-FPN Cascade Mask R-CNN, three mask heads (mmdet's)", *cascade_n, None, f"mmdet::{CASCADE.config}"),
        ("check", "the same with the SecViT stage's box heads (Swin prints 82M, 739)", *count(swin), None,
         f"mmdet::{CASCADE.config}, 4conv1fc box heads"),
    ]


def main() -> None:
    import mmdet  # heavy: mmdet, loaded to name its version

    height, width = DETECTION_SIZE
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    print(f"{date}: detectors counted whole on one {width}x{height} image and as the plan counts a detection stage's "
          f"training work per image (fvcore {fvcore.__version__}, mmdet {mmdet.__version__}, torch {torch.__version__})")
    print(f"{'settings':30} {'detector':66} {'params':>8} {'whole':>7} {'training':>8}")
    for settings, what, params, whole, training, source in rows():
        params_text = f"{params:6.2f} M" if params is not None else "     - "
        training_text = f"{training:8.1f}" if training is not None else "       -"
        print(f"{settings:30} {what:66} {params_text} {whole:7.1f} {training_text}  {source}")


if __name__ == "__main__":
    main()
