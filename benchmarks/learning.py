"""The learning check of the dense stages: do detection and segmentation learn? (docs/learning.md)

Fine-tunes Mask R-CNN, RetinaNet, UperNet and Semantic FPN, each with the SecViT-T backbone of the smoke
pretraining, on generated COCO and ADE20K data that a small model can learn, through the same code as
`secvit detect` / `secvit segment` (the configs of pipelines/configs, prepare_config, run), with a short
schedule of the learning check's own (below). Prints box/mask AP50 on the generated validation images and
mIoU beside the mIoU of a constant predictor (every pixel the most frequent training class).

    python benchmarks/learning.py data [--shuffle]     # generate the data (--shuffle: training labels permuted)
    python benchmarks/learning.py train mask_rcnn       # one setting; writes <out>/<setting>.json
    python benchmarks/learning.py report                # the figures of every setting trained

`bash benchmarks/learning.sh [--shuffle]` runs all of it. With --shuffle the training images keep their
pixels but get another image's annotations, so nothing learnable is left: the figures must fall to
about zero (AP) and to the constant predictor (mIoU). That is the check's own control.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from secvit.data.layout import ADE_DIR
from secvit.data.synthetic import make_ade20k, make_coco
from secvit.downstream.config import CONFIGS, DETECTION_CONFIGS, SEGMENTATION_CONFIGS, Overrides, prepare_config, training_batch
from secvit.downstream.metrics import detection_summary, segmentation_summary
from secvit.downstream.runner import train_and_test
from secvit.errors import SecvitError

WEIGHTS = Path("runs/smoke/pretrain/secvit_tiny/best.pth")
# generated images: (height, width) and counts
DATA = dict(coco=dict(train_images=96, val_images=24, size=(128, 128)),
            ade20k=dict(train_images=64, val_images=16, size=(64, 64)))
# setting: (config, length in epochs (detection) or iterations (segmentation), lr, warm-up iterations)
SETTINGS = {
    "mask_rcnn": (DETECTION_CONFIGS[("mask_rcnn", "1x")], 4, 2e-4, 30),  # 6 epochs took 14.4 min (idle EPYC)
    "retinanet": (DETECTION_CONFIGS[("retinanet", "1x")], 6, 2e-4, 30),
    "upernet": (SEGMENTATION_CONFIGS["upernet"], 150, 2e-4, 20),
    "semantic_fpn": (SEGMENTATION_CONFIGS["semantic_fpn"], 150, 2e-4, 20),
}
# the configs' sizes (short side 800 for detection, 512 for segmentation) brought to the generated images
IMAGE_SCALE = dict(detection=DATA["coco"]["size"][0] / 800, segmentation=DATA["ade20k"]["size"][0] / 512)


def _shuffle_training_labels(out: Path, seed: int = 1) -> None:
    """Give every training image the annotations of another one (same image size, so every box stays valid)."""
    rng = np.random.default_rng(seed)
    path = out / "coco/annotations/instances_train2017.json"
    data = json.loads(path.read_text())
    order = rng.permutation([im["id"] for im in data["images"]]).tolist()
    moved = dict(zip(order, np.roll(order, 1).tolist()))  # a cycle through all images: none keeps its own
    for ann in data["annotations"]:
        ann["image_id"] = moved[ann["image_id"]]
    path.write_text(json.dumps(data))
    labels = sorted((out / "ade20k" / ADE_DIR / "annotations/training").glob("*.png"))
    contents = [p.read_bytes() for p in labels]
    order = rng.permutation(len(labels))
    for i, k in zip(order, np.roll(order, 1)):
        labels[i].write_bytes(contents[k])


def make_data(out: Path, shuffle: bool) -> None:
    shutil.rmtree(out / "coco", ignore_errors=True)
    shutil.rmtree(out / "ade20k", ignore_errors=True)
    make_coco(out / "coco", learnable=True, **DATA["coco"])
    make_ade20k(out / "ade20k", **DATA["ade20k"])
    if shuffle:
        _shuffle_training_labels(out)
    print(f"data in {out} (training labels {'shuffled between images' if shuffle else 'as drawn'})")


def _label_maps(root: Path, split: str) -> np.ndarray:
    """The split's label maps (N, H, W), classes shifted as mmseg's reduce_zero_label does (-1: ignored)."""
    from PIL import Image

    paths = sorted((root / "annotations" / split).glob("*.png"))
    return np.stack([np.asarray(Image.open(p)) for p in paths]).astype(np.int64) - 1


def _miou(pred: np.ndarray, gt: np.ndarray) -> float:
    """mmseg's mIoU in percent: IoU per class over all pixels, averaged over classes with a non-empty union."""
    valid = gt >= 0
    pred, gt = pred[valid], gt[valid]
    ious = []
    for c in np.union1d(np.unique(pred), np.unique(gt)):
        ious.append(np.sum((pred == c) & (gt == c)) / np.sum((pred == c) | (gt == c)))
    return round(100 * float(np.mean(ious)), 2)


def constant_miou(root: Path) -> float:
    """mIoU of predicting the most frequent training class for every pixel."""
    train, val = _label_maps(root, "training"), _label_maps(root, "validation")
    return _miou(np.full_like(val, np.bincount(train[train >= 0]).argmax()), val)


def position_prior_miou(root: Path) -> float:
    """mIoU of predicting, at each pixel position, the training set's most frequent class there (no image seen)."""
    train, val = _label_maps(root, "training"), _label_maps(root, "validation")
    counts = np.stack([(train == c).sum(0) for c in range(train.max() + 1)])
    return _miou(np.broadcast_to(counts.argmax(0), val.shape), val)


def train(out: Path, setting: str, weights: Path) -> dict:
    config, length, lr, warmup = SETTINGS[setting]
    task = "detection" if config.startswith("mmdet") else "segmentation"
    if not weights.is_file():
        raise SecvitError(
            f"no backbone weights at {weights}; run `secvit data --profile smoke --dataset imagenet` and "
            "`secvit pretrain --profile smoke --model secvit_tiny` first, or pass --weights"
        )
    own = CONFIGS / config.format(model="secvit-tiny")
    path = own if own.is_file() else sorted(CONFIGS.glob(config.format(model="*")))[0]
    work = out / "work" / setting
    shutil.rmtree(work, ignore_errors=True)  # a fresh run each time (prepare_config would resume)
    data_root = out / "coco" if task == "detection" else out / "ade20k" / ADE_DIR
    classes = None
    if task == "detection":
        classes = [c["name"] for c in json.loads((data_root / "annotations/instances_val2017.json").read_text())["categories"]]
    overrides = Overrides(
        length=length, batch_per_device=2, global_batch=2, scale_lr=False, workers=0, image_scale=IMAGE_SCALE[task],
        checkpoint_every=length, val_every=length + 1, log_every=10, log_level="WARNING",
    )
    cfg = prepare_config(path, work_dir=work, data_root=data_root, pretrained=weights, overrides=overrides,
                         classes=classes, model="secvit_tiny", world_size=1)
    # the learning check's own optimisation: a higher lr than the recipe's and a short warm-up, for a short run
    cfg.optim_wrapper.optimizer.lr = lr
    warm = dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=warmup)
    if task == "detection":
        cfg.param_scheduler = [warm, dict(type="MultiStepLR", by_epoch=True, begin=0, end=length,
                                          milestones=[length - 1], gamma=0.1)]
    else:
        cfg.param_scheduler = [warm, dict(type="PolyLR", eta_min=0.0, power=1.0, begin=warmup, end=length, by_epoch=False)]
    start = time.time()
    raw = train_and_test(cfg)
    result = {"setting": setting, "config": str(path.relative_to(CONFIGS.parents[1])), "minutes": round((time.time() - start) / 60, 1),
              "length": length, "unit": "epochs" if task == "detection" else "iterations", **training_batch(cfg, 1)}
    if task == "detection":
        result.update(detection_summary(raw))
    else:
        result.update(segmentation_summary(raw), constant_miou=constant_miou(data_root),
                      position_prior_miou=position_prior_miou(data_root))
    (out / f"{setting}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def report(out: Path) -> None:
    rows = []
    for setting in SETTINGS:
        path = out / f"{setting}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        if "ap50_b" in r:
            figure = f"box AP50 {r['ap50_b'] / 100:.3f}" + (f", mask AP50 {r['ap50_m'] / 100:.3f}" if "ap50_m" in r else "")
        else:
            root = out / "ade20k" / ADE_DIR
            figure = (f"mIoU {r['miou']:.1f} (constant predictor {constant_miou(root):.1f}, "
                      f"position prior {position_prior_miou(root):.1f})")
        rows.append(f"| {setting} | {r['length']} {r['unit']}, batch {r['global_batch']}, lr {r['lr']:g} | {r['minutes']} | {figure} |")
    print(f"learning check ({out})\n| setting | schedule | minutes | figures |\n|---|---|---|---|")
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["data", "train", "report"])
    parser.add_argument("setting", nargs="?", choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("runs/learning/real"))
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--shuffle", action="store_true", help="data: permute the training labels between images")
    args = parser.parse_args(argv)
    try:
        if args.command == "data":
            make_data(args.out, args.shuffle)
        elif args.command == "train":
            if args.setting is None:
                parser.error("train needs a setting")
            train(args.out, args.setting, args.weights)
        else:
            report(args.out)
    except SecvitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
