"""Validate the on-disk layouts of ImageNet-1K, COCO 2017 and ADE20K, and list their files.

Every check scans directories with :func:`os.scandir` only (no image is opened, no file
is stat'ed where the directory entry type suffices), so a million-file ImageNet is
checked in seconds. Problems raise :class:`SecvitError` with a one-line message naming
what is wrong and how to fix it. :func:`scan` also lists what :mod:`secvit.data.verify`
decodes: every image (with its mask) and the label files the loaders read.

ImageNet is accepted in three layouts (:func:`find_imagenet`): class folders in both splits
(``train/<wnid>/*``, ``val/<wnid>/*``); the official archives' flat ``val/`` with the devkit's
ground truth beside it; Kaggle's ``ILSVRC/Data/CLS-LOC`` with ``LOC_val_solution.csv``, given its
top folder or ``CLS-LOC`` itself (see :mod:`secvit.data.official`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from secvit.data import official
from secvit.errors import SecvitError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png")

IMAGENET_1K: dict[str, int] = {"classes": 1000, "train": 1281167, "val": 50000}
COCO_2017: dict[str, int] = {"classes": 80, "train": 118287, "val": 5000}
ADE20K: dict[str, int] = {"training": 20210, "validation": 2000}
ADE20K_CLASSES = 150  # label values 1-150; 0 is "other" (ignored: reduce_zero_label)

ADE_DIR = "ADEChallengeData2016"
_SHOW = 5  # how many offending names a message lists
_SEARCH_DIRS = 2000  # folders looked into when searching for a misplaced ImageNet


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


#: One image to verify: (its path relative to the root, its mask's or None, (width, height) its
#: annotation file states or None). Paths are ``/``-separated.
Unit = tuple[str, str | None, tuple[int, int] | None]


@dataclass
class Scanned:
    """A checked dataset: its counts, the images (and masks) to verify, and its label files
    (relative to the root; ImageNet's Kaggle CSV may lie above a ``CLS-LOC`` root: ``../../../``)."""

    counts: DatasetCounts
    units: list[Unit]
    label_files: list[str]


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


def _check_expected(label: str, counts: DatasetCounts, expected: Mapping[str, int] | None, expected_key: str | None = None) -> None:
    if not expected:
        return
    where = expected_key or "the expected counts"
    problems = []
    for key, want in expected.items():
        try:
            got = counts[key]
        except KeyError:
            known = ", ".join(["classes", *counts.splits])
            raise SecvitError(f"{label}: unknown expected-count key {key!r} in {where}; use one of {known}") from None
        if got != want:
            what = "classes" if key == "classes" else f"{key}/ images"
            diff = (got or 0) - want
            rel = f"{abs(diff)} {'more' if diff > 0 else 'fewer'}"
            problems.append(f"{what}: found {got}, expected {want} ({rel})")
    if problems:
        raise SecvitError(
            f"{label}: " + "; ".join(problems)
            + f"; re-extract the missing files, or set {where} to the counts of the subset you use (null: no check)"
        )


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, ``/``-separated ('' for the root itself)."""
    rel = os.path.relpath(path, root)
    return "" if rel == "." else Path(rel).as_posix() + "/"


# ---------------------------------------------------------------- ImageNet


@dataclass
class ImageNetTree:
    """An ImageNet in any accepted layout: its classes (the sorted WNIDs of ``train/``; a class's
    index is its position) and every image of each split as ``(path relative to root, class index)``."""

    root: Path  # as given, absolute
    base: Path  # the folder that holds train/ and val/
    layout: str  # "folders", "devkit" or "kaggle"
    classes: list[str]
    samples: dict[str, list[tuple[str, int]]]
    label_files: list[str]  # the validation labels of a flat val/, relative to root

    def per_class(self, split: str) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for _, target in self.samples[split]:
            counts[self.classes[target]] += 1
        return counts


def _scan_split(split_dir: Path, label: str, split: str) -> tuple[dict[str, list[str]], list[str]]:
    """``(class folder -> sorted image names, images lying directly in the split)`` with the checks of class folders."""
    folders: list[str] = []
    loose: list[str] = []
    with os.scandir(split_dir) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif is_image_name(entry.name):
                loose.append(entry.name)
    per_class: dict[str, list[str]] = {}
    for wnid in sorted(folders):
        names, bad, n_bad = [], [], 0
        with os.scandir(split_dir / wnid) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if is_image_name(entry.name) and not entry.is_dir():
                    names.append(entry.name)
                else:
                    n_bad += 1
                    if len(bad) < _SHOW:
                        bad.append(f"{split}/{wnid}/{entry.name}")
        if n_bad:
            raise SecvitError(
                f"{label}: {n_bad} entries are not images (.JPEG/.jpg/.jpeg/.png): "
                f"{_names(bad, n_bad)}; remove or convert them"
            )
        if not names:
            raise SecvitError(f"{label}: class folder {split}/{wnid} has no images; re-extract it or remove it from every split")
        per_class[wnid] = sorted(names)
    return per_class, sorted(loose)


def _find_below(path: Path) -> Path | None:
    """A folder below ``path`` (at most 5 levels, breadth first) that holds train/ and val/, e.g. Kaggle's CLS-LOC."""
    level, looked = [path], 0
    for _ in range(6):
        below = []
        for folder in level:
            try:
                with os.scandir(folder) as it:
                    subdirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
            looked += 1
            if {"train", "val"} <= set(subdirs) and folder != path:
                return folder
            below += [folder / name for name in subdirs if name not in ("train", "val", "test")]
            if looked >= _SEARCH_DIRS:
                return None
        level = below
    return None


def _imagenet_base(path: Path, label: str) -> Path:
    """The folder holding train/ and val/: ``path`` itself, or Kaggle's ``ILSVRC/Data/CLS-LOC`` below it."""
    if (path / "train").is_dir() or (path / "val").is_dir():
        return path
    kaggle = path.joinpath(*official.KAGGLE_IMAGES)
    if kaggle.is_dir():
        return kaggle
    found = _find_below(path)
    if found is not None:
        top = found.parents[2] if found.parts[-3:] == official.KAGGLE_IMAGES else found
        raise SecvitError(f"{label}: no train/ or val/ here; the images are in {found}: pass {top}")
    return path


def _val_labels(path: Path, base: Path) -> tuple[str, Path, dict[str, str]] | None:
    """``(layout, label file, {image stem: wnid})`` of a flat val/: the devkit's ground truth, else Kaggle's CSV."""
    for folder in dict.fromkeys([base, path]):
        for name in (official.DEVKIT, official.DEVKIT_ARCHIVE):
            if (folder / name).exists():
                return "devkit", folder / name, official.read_devkit(folder / name)
    tops = [path, base] + ([base.parents[2]] if base.parts[-3:] == official.KAGGLE_IMAGES else [])
    for folder in dict.fromkeys(tops):
        if (folder / official.KAGGLE_CSV).is_file():
            return "kaggle", folder / official.KAGGLE_CSV, official.read_kaggle(folder / official.KAGGLE_CSV)
    return None


def find_imagenet(root: str | os.PathLike, splits: tuple[str, ...] = ("train", "val")) -> ImageNetTree:
    """The ImageNet at ``root`` in any accepted layout (module docstring), checked; no image is opened.

    ``splits`` are listed (and checked) image by image; of a split left out (a loader of the other one)
    only train/'s class folders are read, for the class order.
    """
    path = _require_root(root, "ImageNet", "pass the folder that holds train/ and val/")
    label = f"ImageNet at {path}"
    base = _imagenet_base(path, label)
    prefix = _relative(base, path)
    for split in ("train", "val"):
        _require_dir(base / split, f"{label}: {prefix}{split}/", f"extract the ImageNet {split} archive into {base / split}")
    samples: dict[str, list[tuple[str, int]]] = {}
    if "train" in splits:
        train, loose = _scan_split(base / "train", label, "train")
        if loose:
            raise SecvitError(
                f"{label}: train/ holds {len(loose)} images directly instead of in class folders; "
                "extract each class archive of ILSVRC2012_img_train.tar into its own <wnid>/ folder"
            )
        classes = sorted(train)
    else:
        with os.scandir(base / "train") as it:
            classes = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise SecvitError(f"{label}: train/ has no class folders; extract the train archive into it")
    index = {wnid: i for i, wnid in enumerate(classes)}
    if "train" in splits:
        samples["train"] = [(f"{prefix}train/{w}/{n}", index[w]) for w in classes for n in train[w]]
    layout, label_files = "folders", []
    if "val" in splits:
        layout, samples["val"], label_files = _val_samples(path, base, label, prefix, index)
    return ImageNetTree(path, base, layout, classes, samples, label_files)


def _val_samples(
    path: Path, base: Path, label: str, prefix: str, index: dict[str, int]
) -> tuple[str, list[tuple[str, int]], list[str]]:
    """``(layout, val samples, label files)``: class folders like train/'s, or a flat val/ and its official labels."""
    val, loose = _scan_split(base / "val", label, "val")
    if not val and not loose:
        raise SecvitError(f"{label}: val/ has no images; extract the ImageNet val archive into it")
    if not loose:
        if set(val) != set(index):
            missing_val, missing_train = sorted(set(index) - set(val)), sorted(set(val) - set(index))
            detail = []
            if missing_val:
                detail.append(f"missing in val: {_names(missing_val)}")
            if missing_train:
                detail.append(f"missing in train: {_names(missing_train)}")
            raise SecvitError(
                f"{label}: val/ has {len(val)} class folders but train/ has {len(index)} "
                f"({'; '.join(detail)}); run the standard valprep script"
            )
        return "folders", [(f"{prefix}val/{w}/{n}", index[w]) for w in sorted(val) for n in val[w]], []
    found = None if val else _val_labels(path, base)
    if found is None:
        beside = "beside class folders" if val else "instead of in class folders"
        raise SecvitError(
            f"{label}: val/ holds {len(loose)} images directly {beside}; put the devkit ({official.DEVKIT_ARCHIVE} "
            f"or its folder) in {base}, or Kaggle's {official.KAGGLE_CSV} in its top folder, and they are read as they are"
        )
    layout, source, labels = found
    stems = {os.path.splitext(n)[0]: n for n in loose}
    unlabelled = [n for s, n in stems.items() if s not in labels]
    if unlabelled:
        raise SecvitError(f"{label}: {len(unlabelled)} images in val/ have no label in {source} ({_names(unlabelled)}); use the file that came with them")
    absent = sorted(s for s in labels if s not in stems)
    if absent:
        raise SecvitError(
            f"{label}: {len(absent)} validation images listed in {source} are missing from val/ ({_names(absent)}); "
            "re-extract ILSVRC2012_img_val.tar"
        )
    unknown = sorted({w for w in labels.values() if w not in index})
    if unknown:
        raise SecvitError(
            f"{label}: {source} labels validation images with {len(unknown)} classes that train/ lacks ({_names(unknown)}); "
            "extract their train folders"
        )
    samples = sorted((f"{prefix}val/{n}", index[labels[s]]) for s, n in stems.items())
    files = [source / official.META, source / official.GROUND_TRUTH] if source.is_dir() else [source]
    return layout, samples, [Path(os.path.relpath(f, path)).as_posix() for f in files]


def find_image(root: str | os.PathLike, name: str) -> Path | None:
    """The image called ``name`` in val/ (flat or in class folders), else train/, of the ImageNet at ``root``; None if absent."""
    _require_root(root, "ImageNet", "pass the folder that holds train/ and val/")
    base = _imagenet_base(Path(root).expanduser(), f"ImageNet at {root}")  # paths as given
    wnid = name.split("_")[0]  # train images are <wnid>_<n>.JPEG
    for candidate in (base / "val" / name, base / "train" / wnid / name):
        if candidate.is_file():
            return candidate
    for split in ("val", "train"):
        found = sorted((base / split).glob(f"*/{name}"))
        if found:
            return found[0]
    return None


def _imagenet(root: str | os.PathLike, expected: Mapping[str, int] | None, expected_key: str | None) -> Scanned:
    tree = find_imagenet(root)
    counts = DatasetCounts(
        kind="imagenet",
        splits={s: len(v) for s, v in tree.samples.items()},
        classes=len(tree.classes),
        per_class={s: tree.per_class(s) for s in tree.samples},
    )
    _check_expected(f"ImageNet at {tree.root}", counts, expected, expected_key)
    units = [(rel, None, None) for split in ("train", "val") for rel, _ in tree.samples[split]]
    return Scanned(counts, units, tree.label_files)


def check_imagenet(
    root: str | os.PathLike, expected: Mapping[str, int] | None = None, expected_key: str | None = None
) -> DatasetCounts:
    """Check an ImageNet at ``root`` in any accepted layout (:func:`find_imagenet`).

    ``expected`` (e.g. :data:`IMAGENET_1K`) lists counts that must match exactly; ``expected_key``
    names where they are set (e.g. ``paper.data.expected.imagenet``) in the message.
    """
    return _imagenet(root, expected, expected_key).counts


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


def _coco_entries(data: dict, ann_file: Path, hint: str) -> tuple[list[tuple[str, int, int]], set[int]]:
    """``([(file_name, width, height)], category ids)`` of one annotation file, with the references checked."""
    try:
        images = [(img["file_name"], int(img["width"]), int(img["height"]), img["id"]) for img in data["images"]]
        categories = {c["id"] for c in data["categories"]}
    except (KeyError, TypeError, ValueError):
        raise SecvitError(f"COCO annotation file {ann_file} has an image without file_name, width, height and id, or a category without id; {hint}") from None
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("category_id") not in categories:
            what = ann.get("category_id") if isinstance(ann, dict) else ann
            where = ann.get("id") if isinstance(ann, dict) else "?"
            raise SecvitError(f"COCO annotation file {ann_file}: annotation {where} has category_id {what!r}, which is not in its categories; {hint}")
    return [(name, w, h) for name, w, h, _ in images], categories


def _coco(root: str | os.PathLike, expected: Mapping[str, int] | None, expected_key: str | None) -> Scanned:
    path = _require_root(root, "COCO", "pass the folder that holds train2017/, val2017/ and annotations/")
    label = f"COCO at {path}"
    hint = "re-download annotations_trainval2017.zip and extract it into the COCO root"
    splits, anns, classes, units, label_files = {}, {}, None, [], []
    for split in ("train", "val"):
        img_dir = path / f"{split}2017"
        _require_dir(img_dir, f"{label}: {split}2017/", f"extract {split}2017.zip into {path}")
        ann_file = path / "annotations" / f"instances_{split}2017.json"
        if not ann_file.is_file():
            raise SecvitError(f"{label}: annotations/instances_{split}2017.json is missing; {hint}")
        data = _load_json(ann_file, hint)
        images, categories = _coco_entries(data, ann_file, hint)
        present = _dir_names(img_dir)
        missing = [name for name, _, _ in images if name not in present]
        if missing:
            raise SecvitError(
                f"{label}: {len(missing)} images listed in annotations/instances_{split}2017.json are missing "
                f"from {split}2017/ ({_names(missing)}); re-extract {split}2017.zip"
            )
        splits[split], anns[split] = len(images), len(data["annotations"])
        if classes is not None and len(categories) != classes:
            raise SecvitError(f"{label}: train and val annotation files have {classes} and {len(categories)} categories; {hint}")
        classes = len(categories)
        units += [(f"{split}2017/{name}", None, (w, h)) for name, w, h in images]
        label_files.append(f"annotations/instances_{split}2017.json")
    counts = DatasetCounts(kind="coco", splits=splits, classes=classes, annotations=anns)
    _check_expected(label, counts, expected, expected_key)
    return Scanned(counts, units, label_files)


def check_coco(root: str | os.PathLike, expected: Mapping[str, int] | None = None, expected_key: str | None = None) -> DatasetCounts:
    """Check a COCO 2017 tree: ``{train,val}2017/`` and ``annotations/instances_{train,val}2017.json``.

    Every image listed in the annotation file must exist, and every annotation's category be one of its
    categories. ``expected`` e.g. :data:`COCO_2017`; ``expected_key`` as for :func:`check_imagenet`.
    """
    return _coco(root, expected, expected_key).counts


# ---------------------------------------------------------------- ADE20K


def _ade20k(root: str | os.PathLike, expected: Mapping[str, int] | None, expected_key: str | None) -> Scanned:
    path = _require_root(root, "ADE20K", f"pass the folder that holds {ADE_DIR}/")
    label = f"ADE20K at {path}"
    base = path / ADE_DIR
    if not base.is_dir():
        if (path / "images").is_dir() and (path / "annotations").is_dir():
            raise SecvitError(f"{label}: no {ADE_DIR}/ folder; {path} looks like {ADE_DIR} itself, pass its parent {path.parent}")
        raise SecvitError(f"{label}: {ADE_DIR}/ is missing; extract ADEChallengeData2016.zip into {path}")
    splits, units = {}, []
    for split in ("training", "validation"):
        img_dir, ann_dir = base / "images" / split, base / "annotations" / split
        _require_dir(img_dir, f"{label}: {ADE_DIR}/images/{split}/", "re-extract ADEChallengeData2016.zip")
        _require_dir(ann_dir, f"{label}: {ADE_DIR}/annotations/{split}/", "re-extract ADEChallengeData2016.zip")
        images = sorted(n for n in _dir_names(img_dir) if is_image_name(n) and not n.startswith("."))
        labels = {n[:-4]: n for n in _dir_names(ann_dir) if n.lower().endswith(".png")}
        missing = [n for n in images if os.path.splitext(n)[0] not in labels]
        if missing:
            raise SecvitError(
                f"{label}: {len(missing)} images in images/{split}/ have no .png in annotations/{split}/ "
                f"({_names(missing)}); re-extract ADEChallengeData2016.zip"
            )
        if not images:
            raise SecvitError(f"{label}: images/{split}/ has no images; re-extract ADEChallengeData2016.zip")
        splits[split] = len(images)
        units += [
            (f"{ADE_DIR}/images/{split}/{n}", f"{ADE_DIR}/annotations/{split}/{labels[os.path.splitext(n)[0]]}", None) for n in images
        ]
    counts = DatasetCounts(kind="ade20k", splits=splits)
    _check_expected(label, counts, expected, expected_key)
    return Scanned(counts, units, [])


def check_ade20k(root: str | os.PathLike, expected: Mapping[str, int] | None = None, expected_key: str | None = None) -> DatasetCounts:
    """Check ADE20K (SceneParsing release) at ``root/ADEChallengeData2016``.

    Each image under ``images/{training,validation}`` needs a same-stem ``.png`` under
    ``annotations/{training,validation}``. ``expected`` e.g. :data:`ADE20K`; ``expected_key`` as for
    :func:`check_imagenet`.
    """
    return _ade20k(root, expected, expected_key).counts


SCANS = {"imagenet": _imagenet, "coco": _coco, "ade20k": _ade20k}


def scan(kind: str, root: str | os.PathLike, expected: Mapping[str, int] | None = None, expected_key: str | None = None) -> Scanned:
    """The layout check of dataset ``kind`` (``imagenet``, ``coco``, ``ade20k``) and the files to verify."""
    return SCANS[kind](root, expected, expected_key)
