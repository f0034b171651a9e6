"""Validate the on-disk layouts of ImageNet-1K, COCO 2017 and ADE20K.

Every check scans directories with :func:`os.scandir` only (no image is opened, no file
is stat'ed where the directory entry type suffices), so a million-file ImageNet is
checked in seconds. Problems raise :class:`SecvitError` with a one-line message naming
what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from secvit.errors import SecvitError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png")

IMAGENET_1K: dict[str, int] = {"classes": 1000, "train": 1281167, "val": 50000}
COCO_2017: dict[str, int] = {"classes": 80, "train": 118287, "val": 5000}
ADE20K: dict[str, int] = {"training": 20210, "validation": 2000}

ADE_DIR = "ADEChallengeData2016"
_SHOW = 5  # how many offending names a message lists


@dataclass(frozen=True)
class DatasetCounts:
    """What a layout check found.

    ``splits`` maps split name (as on disk: ``train``/``val`` or ``training``/``validation``)
    to its number of images; ``per_class`` (ImageNet) maps split -> class folder -> images;
    ``annotations`` (COCO) maps split -> number of annotations.
    """

    kind: str
    splits: dict[str, int]
    classes: int | None = None
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    annotations: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int | None:
        """``counts["train"]`` / ``counts["classes"]``: the values ``expected`` dicts use."""
        if key == "classes":
            return self.classes
        if key in self.splits:
            return self.splits[key]
        raise KeyError(key)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (used by the manifest)."""
        return asdict(self)


def is_image_name(name: str) -> bool:
    """True for ``.JPEG``/``.jpg``/``.jpeg``/``.png`` names (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _names(items: list[str], total: int | None = None) -> str:
    total = len(items) if total is None else total
    shown = ", ".join(items[:_SHOW])
    return shown + (f" and {total - _SHOW} more" if total > _SHOW else "")


def _require_root(root: str | os.PathLike, label: str, hint: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise SecvitError(f"{label} root {path} does not exist; {hint}")
    if not path.is_dir():
        raise SecvitError(f"{label} root {path} is not a directory; {hint}")
    return path.absolute()


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "is missing"
        raise SecvitError(f"{what} {state}; {hint}")


def _check_expected(label: str, counts: DatasetCounts, expected: Mapping[str, int] | None) -> None:
    if not expected:
        return
    problems = []
    for key, want in expected.items():
        try:
            got = counts[key]
        except KeyError:
            known = ", ".join(["classes", *counts.splits])
            raise SecvitError(f"{label}: unknown expected-count key {key!r}; use one of {known}") from None
        if got != want:
            what = "classes" if key == "classes" else f"{key}/ images"
            diff = (got or 0) - want
            rel = f"{abs(diff)} {'more' if diff > 0 else 'fewer'}"
            problems.append(f"{what}: found {got}, expected {want} ({rel})")
    if problems:
        raise SecvitError(
            f"{label}: " + "; ".join(problems)
            + "; re-extract the missing files, or pass the expected counts of the subset you use"
        )


# ---------------------------------------------------------------- ImageNet


def _scan_split(split_dir: Path, label: str, split: str) -> dict[str, int]:
    """Class folder -> number of images, with the ImageNet checks of one split."""
    per_class: dict[str, int] = {}
    loose_images = 0
    with os.scandir(split_dir) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    for entry in entries:
        if entry.is_dir():
            per_class[entry.name] = 0
        elif is_image_name(entry.name):
            loose_images += 1
    if loose_images:
        raise SecvitError(
            f"{label}: {split}/ holds {loose_images} images directly instead of in class folders; "
            f"sort them into <wnid>/ folders (for val/ run the standard valprep script)"
        )
    if not per_class:
        raise SecvitError(f"{label}: {split}/ has no class folders; extract the {split} archive into it")
    for wnid in sorted(per_class):
        n, bad, n_bad = 0, [], 0
        with os.scandir(split_dir / wnid) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if is_image_name(entry.name) and not entry.is_dir():
                    n += 1
                else:
                    n_bad += 1
                    if len(bad) < _SHOW:
                        bad.append(f"{split}/{wnid}/{entry.name}")
        if n_bad:
            raise SecvitError(
                f"{label}: {n_bad} entries are not images (.JPEG/.jpg/.jpeg/.png): "
                f"{_names(bad, n_bad)}; remove or convert them"
            )
        if n == 0:
            raise SecvitError(f"{label}: class folder {split}/{wnid} has no images; re-extract it or remove it from every split")
        per_class[wnid] = n
    return dict(sorted(per_class.items()))


def check_imagenet(root: str | os.PathLike, expected: Mapping[str, int] | None = None) -> DatasetCounts:
    """Check an ImageFolder-layout ImageNet at ``root`` (``train/<wnid>/*``, ``val/<wnid>/*``).

    ``expected`` (e.g. :data:`IMAGENET_1K`) lists counts that must match exactly.
    """
    path = _require_root(root, "ImageNet", "pass the folder that holds train/ and val/")
    label = f"ImageNet at {path}"
    for split in ("train", "val"):
        _require_dir(path / split, f"{label}: {split}/", f"extract the ImageNet {split} archive into {path / split}")
    per_class = {split: _scan_split(path / split, label, split) for split in ("train", "val")}
    train, val = set(per_class["train"]), set(per_class["val"])
    if train != val:
        missing_val, missing_train = sorted(train - val), sorted(val - train)
        detail = []
        if missing_val:
            detail.append(f"missing in val: {_names(missing_val)}")
        if missing_train:
            detail.append(f"missing in train: {_names(missing_train)}")
        raise SecvitError(
            f"{label}: val/ has {len(val)} class folders but train/ has {len(train)} "
            f"({'; '.join(detail)}); run the standard valprep script"
        )
    counts = DatasetCounts(
        kind="imagenet",
        splits={s: sum(pc.values()) for s, pc in per_class.items()},
        classes=len(train),
        per_class=per_class,
    )
    _check_expected(label, counts, expected)
    return counts


# ---------------------------------------------------------------- COCO


def _load_json(path: Path, hint: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SecvitError(f"COCO annotation file {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); {hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SecvitError(f"COCO annotation file {path} cannot be read ({type(e).__name__}: {e}); {hint}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise SecvitError(f"COCO annotation file {path} has no images/annotations/categories lists; {hint}")
    return data


def _dir_names(path: Path) -> set[str]:
    with os.scandir(path) as it:
        return {e.name for e in it}


def check_coco(root: str | os.PathLike, expected: Mapping[str, int] | None = None) -> DatasetCounts:
    """Check a COCO 2017 tree: ``{train,val}2017/`` and ``annotations/instances_{train,val}2017.json``.

    Every image listed in the annotation file must exist. ``expected`` e.g. :data:`COCO_2017`.
    """
    path = _require_root(root, "COCO", "pass the folder that holds train2017/, val2017/ and annotations/")
    label = f"COCO at {path}"
    hint = "re-download annotations_trainval2017.zip and extract it into the COCO root"
    splits, anns, classes = {}, {}, None
    for split in ("train", "val"):
        img_dir = path / f"{split}2017"
        _require_dir(img_dir, f"{label}: {split}2017/", f"extract {split}2017.zip into {path}")
        ann_file = path / "annotations" / f"instances_{split}2017.json"
        if not ann_file.is_file():
            raise SecvitError(f"{label}: annotations/instances_{split}2017.json is missing; {hint}")
        data = _load_json(ann_file, hint)
        try:
            listed = [img["file_name"] for img in data["images"]]
        except (KeyError, TypeError):
            raise SecvitError(f"COCO annotation file {ann_file} has an image entry without file_name; {hint}") from None
        present = _dir_names(img_dir)
        missing = [name for name in listed if name not in present]
        if missing:
            raise SecvitError(
                f"{label}: {len(missing)} images listed in annotations/instances_{split}2017.json are missing "
                f"from {split}2017/ ({_names(missing)}); re-extract {split}2017.zip"
            )
        splits[split], anns[split] = len(listed), len(data["annotations"])
        n_cat = len(data["categories"])
        if classes is not None and n_cat != classes:
            raise SecvitError(f"{label}: train and val annotation files have {classes} and {n_cat} categories; {hint}")
        classes = n_cat
    counts = DatasetCounts(kind="coco", splits=splits, classes=classes, annotations=anns)
    _check_expected(label, counts, expected)
    return counts


# ---------------------------------------------------------------- ADE20K


def check_ade20k(root: str | os.PathLike, expected: Mapping[str, int] | None = None) -> DatasetCounts:
    """Check ADE20K (SceneParsing release) at ``root/ADEChallengeData2016``.

    Each image under ``images/{training,validation}`` needs a same-stem ``.png`` under
    ``annotations/{training,validation}``. ``expected`` e.g. :data:`ADE20K`.
    """
    path = _require_root(root, "ADE20K", f"pass the folder that holds {ADE_DIR}/")
    label = f"ADE20K at {path}"
    base = path / ADE_DIR
    if not base.is_dir():
        if (path / "images").is_dir() and (path / "annotations").is_dir():
            raise SecvitError(f"{label}: no {ADE_DIR}/ folder; {path} looks like {ADE_DIR} itself, pass its parent {path.parent}")
        raise SecvitError(f"{label}: {ADE_DIR}/ is missing; extract ADEChallengeData2016.zip into {path}")
    splits = {}
    for split in ("training", "validation"):
        img_dir, ann_dir = base / "images" / split, base / "annotations" / split
        _require_dir(img_dir, f"{label}: {ADE_DIR}/images/{split}/", "re-extract ADEChallengeData2016.zip")
        _require_dir(ann_dir, f"{label}: {ADE_DIR}/annotations/{split}/", "re-extract ADEChallengeData2016.zip")
        images = sorted(n for n in _dir_names(img_dir) if is_image_name(n) and not n.startswith("."))
        labels = {n[:-4] for n in _dir_names(ann_dir) if n.lower().endswith(".png")}
        missing = [n for n in images if os.path.splitext(n)[0] not in labels]
        if missing:
            raise SecvitError(
                f"{label}: {len(missing)} images in images/{split}/ have no .png in annotations/{split}/ "
                f"({_names(missing)}); re-extract ADEChallengeData2016.zip"
            )
        if not images:
            raise SecvitError(f"{label}: images/{split}/ has no images; re-extract ADEChallengeData2016.zip")
        splits[split] = len(images)
    counts = DatasetCounts(kind="ade20k", splits=splits)
    _check_expected(label, counts, expected)
    return counts
