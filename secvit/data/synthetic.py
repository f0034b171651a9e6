"""Tiny procedurally drawn datasets in the exact on-disk layouts of the real ones.

All generators are deterministic given ``seed`` (each image has its own RNG seeded from
``(seed, split, index)``), need no network, and write a whole tiny dataset in about a
second. Sizes are ``(height, width)``.

:func:`generate` is how the pipeline writes one, and it deletes nothing it did not make: it
writes only into a missing or empty folder, or one that holds its marker (:data:`MARKER`,
which lists the files and folders it made); anything else is refused, unchanged.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from secvit.atomic import write_json
from secvit.errors import SecvitError

JPEG_QUALITY = 90
IMAGENET_KINDS = (  # the first classes differ in texture, which a small model learns in a few dozen steps
    "hstripes", "vstripes", "checker", "dstripes", "circle",
    "square", "triangle", "ring", "cross", "frame",
)
MAX_IMAGENET_CLASSES = 3 * len(IMAGENET_KINDS)
COCO_CATEGORIES = ("circle", "square", "triangle")
#: Objects in one generated COCO image: the fewest and the most (make_coco; the learnable set has 1-2)
COCO_OBJECTS = (1, 3)
_SPLIT_CODE = {"train": 1, "val": 2}
_CATEGORY_COLOURS = np.array([(220, 40, 40), (40, 200, 40), (40, 60, 230)])  # make_coco(learnable=True)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random foreground/background colours that differ clearly in brightness."""
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(int(fg.mean()) - int(bg.mean())) >= 60:
            return fg.astype(np.float32), bg.astype(np.float32)


def _rotated(points: np.ndarray, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return [(float(x + cx), float(y + cy)) for x, y in rot]


def _regular_polygon(n: int, r: float, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    t = np.arange(n) * 2 * math.pi / n
    return _rotated(np.stack([np.cos(t), np.sin(t)], 1) * r, angle, cx, cy)


def _shape_polygon(kind: str, r: float, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """Polygon of a circle / square / triangle with circumradius ``r``."""
    if kind == "circle":
        return _regular_polygon(32, r, 0.0, cx, cy)
    if kind == "square":
        return _regular_polygon(4, r, angle + math.pi / 4, cx, cy)
    if kind == "triangle":
        return _regular_polygon(3, r, angle - math.pi / 2, cx, cy)
    raise ValueError(kind)


def _shape_mask(kind: str, copies: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of ``copies`` objects of one ImageNet shape kind."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((size, size), bool)
    scale = 1.0 / math.sqrt(copies)
    for _ in range(copies):
        r = size * rng.uniform(0.2, 0.34) * scale
        cx, cy = rng.uniform(r, size - r, 2)
        angle = rng.uniform(0, 2 * math.pi)
        if kind in ("circle", "square", "triangle"):
            draw.polygon(_shape_polygon(kind, r, angle, cx, cy), fill=255)
        elif kind == "ring":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=max(2, int(r / 3)))
        elif kind == "frame":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=255, width=max(2, int(r / 3)))
        elif kind == "cross":
            w = r / 3
            draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
            draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
        else:  # striped / checkered patch
            box = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
            period = max(4.0, r * rng.uniform(0.35, 0.6))
            if kind == "hstripes":
                pattern = ((yy - cy) // (period / 2)) % 2 == 0
            elif kind == "vstripes":
                pattern = ((xx - cx) // (period / 2)) % 2 == 0
            elif kind == "dstripes":
                pattern = ((xx + yy) // (period / 2)) % 2 == 0
            else:  # checker
                pattern = (((xx - cx) // (period / 2)) + ((yy - cy) // (period / 2))) % 2 == 0
            out |= box & pattern
    return out | (np.asarray(mask) > 127)


def _compose(mask: np.ndarray, fg: np.ndarray, bg: np.ndarray, rng: np.random.Generator, noise: float) -> Image.Image:
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, noise, mask.shape + (3,))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def make_imagenet(
    root: str | os.PathLike,
    num_classes: int = 4,
    train_per_class: int = 60,
    val_per_class: int = 20,
    size: int = 64,
    seed: int = 0,
) -> dict[str, int]:
    """Write an ImageFolder-layout ImageNet look-alike; returns ``{"classes", "train", "val"}``.

    Class ``k`` is shape kind ``IMAGENET_KINDS[k % 10]`` drawn ``k // 10 + 1`` times, in random
    colours on a random-coloured noisy background, so mean colour says little about the class.
    """
    if not 1 <= num_classes <= MAX_IMAGENET_CLASSES:
        raise SecvitError(f"make_imagenet: num_classes={num_classes} is out of range; use 1..{MAX_IMAGENET_CLASSES}")
    if size < 16:
        raise SecvitError(f"make_imagenet: size={size} is too small to draw shapes; use size >= 16")
    root = Path(root)
    wnids = [f"n{1440764 + 1000 * k:08d}" for k in range(num_classes)]
    val_numbers = _rng(seed, 99).permutation(num_classes * val_per_class) + 1
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for k, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            kind, copies = IMAGENET_KINDS[k % len(IMAGENET_KINDS)], k // len(IMAGENET_KINDS) + 1
            for i in range(per_class):
                rng = _rng(seed, _SPLIT_CODE[split], k, i)
                fg, bg = _colour_pair(rng)
                img = _compose(_shape_mask(kind, copies, size, rng), fg, bg, rng, noise=12.0)
                if split == "train":
                    name = f"{wnid}_{i + 1}.JPEG"
                else:
                    name = f"ILSVRC2012_val_{val_numbers[k * per_class + i]:08d}.JPEG"
                img.save(folder / name, quality=JPEG_QUALITY)
    return {"classes": num_classes, "train": num_classes * train_per_class, "val": num_classes * val_per_class}


def _place_objects(
    rng: np.random.Generator, h: int, w: int, n: int, radius: tuple[float, float] = (0.12, 0.25)
) -> list[tuple[float, float, float]]:
    """Up to ``n`` non-overlapping circles (cx, cy, r) that fit in the image; ``r`` a fraction ``radius`` of the short side."""
    placed: list[tuple[float, float, float]] = []
    lo, hi = radius[0] * min(h, w), radius[1] * min(h, w)
    for _ in range(50 * n):
        if len(placed) == n:
            break
        r = rng.uniform(lo, hi)
        cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
        if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
            placed.append((cx, cy, r))
    return placed


def _polygon_area(poly: list[tuple[float, float]]) -> float:
    x, y = np.array(poly).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def make_coco(
    root: str | os.PathLike,
    train_images: int = 16,
    val_images: int = 8,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    learnable: bool = False,
) -> dict[str, int]:
    """Write a COCO-2017-layout detection/instance-segmentation set of circles, squares, triangles.

    Each image has 1-3 non-overlapping objects in random colours; ``segmentation`` is the exact polygon
    that was drawn. ``learnable=True`` makes a set that a small detector learns in minutes on a CPU (the
    learning check, benchmarks/learning.sh): 1-2 large objects (radius 20-35% of the short side), each
    category in its own colour (red circles, green squares, blue triangles) on a grey background.
    Returns ``{"classes", "train", "val", "train_annotations", "val_annotations"}``.
    """
    h, w = size
    if min(h, w) < 32:
        raise SecvitError(f"make_coco: size={size} is too small; use (height, width) >= 32")
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(COCO_CATEGORIES)]
    result = {"classes": len(categories)}
    ann_id = 1
    for split, n_images in (("train", train_images), ("val", val_images)):
        img_dir = root / f"{split}2017"
        img_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(n_images):
            rng = _rng(seed, _SPLIT_CODE[split], i)
            image_id = _SPLIT_CODE[split] * 100000 + i + 1
            file_name = f"{image_id:012d}.jpg"
            bg = (np.full(3, rng.integers(96, 160)) if learnable else rng.integers(0, 256, 3)).astype(np.float32)
            arr = np.clip(bg + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr, "RGB")
            draw = ImageDraw.Draw(img)
            fewest, most = (1, 2) if learnable else COCO_OBJECTS
            count, radius = int(rng.integers(fewest, most + 1)), ((0.2, 0.35) if learnable else (0.12, 0.25))
            for cx, cy, r in _place_objects(rng, h, w, count, radius):
                cat = int(rng.integers(0, len(COCO_CATEGORIES)))
                poly = [(round(x, 2), round(y, 2)) for x, y in
                        _shape_polygon(COCO_CATEGORIES[cat], r, rng.uniform(0, 2 * math.pi), cx, cy)]
                while not learnable:
                    fg = rng.integers(0, 256, 3)
                    if np.abs(fg - bg).sum() >= 150:
                        break
                if learnable:
                    fg = np.clip(_CATEGORY_COLOURS[cat] + rng.integers(-20, 21, 3), 0, 255)
                draw.polygon(poly, fill=tuple(int(c) for c in fg))
                xs, ys = [p[0] for p in poly], [p[1] for p in poly]
                bbox = [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": cat + 1,
                    "segmentation": [[c for p in poly for c in p]],
                    "area": round(_polygon_area(poly), 2), "bbox": bbox, "iscrowd": 0,
                })
                ann_id += 1
            img.save(img_dir / file_name, quality=JPEG_QUALITY)
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h,
                           "license": 1, "date_captured": "2017-01-01 00:00:00"})
        data = {
            "info": {"description": "secvit synthetic COCO", "version": "1.0", "year": 2017},
            "licenses": [{"id": 1, "name": "CC0", "url": ""}],
            "images": images, "annotations": annotations, "categories": categories,
        }
        with open(root / "annotations" / f"instances_{split}2017.json", "w", encoding="utf-8") as f:
            json.dump(data, f)
        result[split], result[f"{split}_annotations"] = n_images, len(annotations)
    return result


def _palette(num_classes: int) -> np.ndarray:
    """Fixed, well-spread RGB colour per class label 0..num_classes."""
    cols = [colorsys.hsv_to_rgb((k * 0.618034) % 1, 0.75, 0.55 + 0.4 * ((k * 7) % 3) / 2) for k in range(num_classes + 1)]
    return (np.array(cols) * 255).astype(np.float32)


def make_ade20k(
    root: str | os.PathLike,
    train_images: int = 16,
    val_images: int = 8,
    size: tuple[int, int] = (128, 128),
    num_classes: int = 150,
    seed: int = 0,
) -> dict[str, int]:
    """Write an ADE20K (``ADEChallengeData2016``) look-alike; returns ``{"training", "validation"}``.

    Label PNGs are single-channel uint8: class 1 is the background, class 2 a floor band,
    classes 3..min(num_classes, 4) circles/triangles, and one unlabelled patch is 0 (ignore).
    Each class has a fixed colour (plus noise), so image and label agree.
    """
    if not 1 <= num_classes <= 255:
        raise SecvitError(f"make_ade20k: num_classes={num_classes} is out of range; use 1..255")
    h, w = size
    if min(h, w) < 32:
        raise SecvitError(f"make_ade20k: size={size} is too small; use (height, width) >= 32")
    base = Path(root) / "ADEChallengeData2016"
    palette = _palette(num_classes)
    used = list(range(1, min(num_classes, 4) + 1))
    result = {}
    for split, prefix, n_images, code in (("training", "train", train_images, 1), ("validation", "val", val_images, 2)):
        img_dir, ann_dir = base / "images" / split, base / "annotations" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_images):
            rng = _rng(seed, code, i)
            label = Image.new("L", (w, h), used[0])
            draw = ImageDraw.Draw(label)
            if len(used) > 1:
                draw.rectangle([0, int(h * rng.uniform(0.6, 0.8)), w, h], fill=used[1])
            for cx, cy, r in _place_objects(rng, h, w, int(rng.integers(1, 4))):
                cls = used[int(rng.integers(2, len(used)))] if len(used) > 2 else used[-1]
                kind = "circle" if cls % 2 else "triangle"
                draw.polygon(_shape_polygon(kind, r, rng.uniform(0, 2 * math.pi), cx, cy), fill=cls)
            x0, y0 = int(rng.integers(0, w - w // 6)), int(rng.integers(0, h - h // 6))
            draw.rectangle([x0, y0, x0 + w // 8, y0 + h // 8], fill=0)
            lab = np.asarray(label)
            colours = palette[lab] + rng.uniform(-15, 15, 3)
            colours[lab == 0] = rng.integers(0, 256, 3)
            img = np.clip(colours + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
            stem = f"ADE_{prefix}_{i + 1:08d}"
            Image.fromarray(img, "RGB").save(img_dir / f"{stem}.jpg", quality=JPEG_QUALITY)
            label.save(ann_dir / f"{stem}.png")
        result[split] = n_images
    return result


# ---------------------------------------------------------------- writing one safely

MARKER = ".secvit-generated.json"  # in a generated dataset's root: what secvit made there


def _made(folder: Path) -> tuple[list[str], list[str]]:
    """``(files, folders)`` below ``folder``, relative and ``/``-separated, the marker left out."""
    files, dirs = [], []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            dirs.append(rel)
        elif rel != MARKER:
            files.append(rel)
    return files, dirs


def _files_upto(folder: Path, limit: int) -> list[str] | None:
    """The sorted files below ``folder`` as :func:`_made` lists them, or None once there are more than ``limit``."""
    files = []
    for top, dirnames, names in os.walk(folder):
        dirnames.sort()
        rel = Path(top).relative_to(folder)
        files += [(rel / n).as_posix() for n in names if not (n == MARKER and top == str(folder))]
        if len(files) > limit:
            return None
    return sorted(files)


def _inside(rel: Any) -> bool:
    return isinstance(rel, str) and bool(rel) and not Path(rel).is_absolute() and ".." not in Path(rel).parts


def _marker(root: Path) -> dict[str, list[str]] | None:
    """What the marker in ``root`` says secvit made there; None without a (readable) marker."""
    try:
        data = json.loads((root / MARKER).read_text(encoding="utf-8"))
        files, dirs = data["files"], data["dirs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not isinstance(dirs, list) or not all(map(_inside, files + dirs)):
        return None
    return {"files": files, "dirs": dirs}


def generate(kind: str, root: str | os.PathLike, args: Mapping[str, Any], hint: str = "choose an empty or missing folder") -> dict[str, int]:
    """Write the generated ``kind`` dataset (``imagenet``, ``coco``, ``ade20k``; ``args`` for its ``make_*``) at ``root``.

    ``root`` may be missing or empty, or hold the marker of an earlier generation: its files are then
    replaced and those it listed that the new one lacks removed (folders only once empty); a file it
    did not list stays. A folder whose files are exactly those the generator writes counts as an
    earlier generation too (one made before markers existed). Anything else is refused with a one-line
    :class:`SecvitError` naming the folder (``hint`` says what to do), and nothing is changed. The data
    is drawn in a temporary folder beside ``root`` first, so a failure leaves ``root`` as it was.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise SecvitError(f"will not generate the {kind} data at {root}: it is a file, not a folder; {hint}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.generating-", dir=root.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the dataset folder's
    try:
        counts = GENERATORS[kind](tmp, **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
        files, dirs = _made(tmp)
        record = {"kind": kind, "args": dict(args), "files": files, "dirs": dirs}
        present = sorted(os.listdir(root)) if root.is_dir() else None
        if not present:  # missing or empty: the new data becomes the folder
            write_json(tmp / MARKER, record)
            if present is not None:
                root.rmdir()
            os.rename(tmp, root)
            return counts
        old = _marker(root)
        if old is None and _files_upto(root, len(files)) == files:
            old = {"files": files, "dirs": dirs}
        if old is None:
            raise SecvitError(
                f"will not generate the {kind} data into {root}: it holds files that secvit did not make "
                f"({', '.join(present[:3])}{' ...' if len(present) > 3 else ''}) and no {MARKER}; nothing was changed; {hint}"
            )
        ours = set(old["files"])
        clash = [f for f in files if f not in ours and (root / f).exists()]
        clash += [d for d in dirs if (root / d).exists() and not (root / d).is_dir()]
        if clash:
            raise SecvitError(f"will not generate the {kind} data into {root}: {clash[0]} is in the way and secvit did not make it; nothing was changed; {hint}")
        write_json(root / MARKER, {**record, "files": sorted(ours | set(files)), "dirs": sorted(set(old["dirs"]) | set(dirs))})
        for rel in sorted(ours - set(files)):
            if (root / rel).is_file() or (root / rel).is_symlink():
                (root / rel).unlink()
        for rel in sorted(set(old["dirs"]) - set(dirs), key=lambda d: -d.count("/")):
            try:
                (root / rel).rmdir()  # only once empty: a file someone put there keeps its folder
            except OSError:
                pass
        for rel in dirs:
            (root / rel).mkdir(exist_ok=True)
        for rel in files:
            os.replace(tmp / rel, root / rel)
        write_json(root / MARKER, record)
        return counts
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # the temporary folder this call made


GENERATORS = {"imagenet": make_imagenet, "coco": make_coco, "ade20k": make_ade20k}
