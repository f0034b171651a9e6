"""Decode every image and mask of a dataset once, in parallel, and remember what was found.

A unit (:data:`secvit.data.layout.Unit`) is one image, with its mask (ADE20K) and the size its
annotation file states (COCO). It is bad when:

- the image is missing, empty, or does not decode to the end (truncated or corrupt; PIL, as strict as
  the loaders or stricter: a truncated JPEG that OpenCV would half-decode is bad too);
- COCO: its size differs from the ``width``/``height`` of its annotation file;
- ADE20K: its mask does not decode, is not one channel (mode ``L`` or ``P``), differs from the image
  in size, or holds a label above :data:`~secvit.data.layout.ADE20K_CLASSES`.

JPEGs decode at 1/8 scale (libjpeg's DCT scaling, ``Image.draft``): every byte of the entropy-coded
data is still read, so a truncation is found; it costs about 20% less than a full decode (benchmarks/verify_data.py).

The result is cached by file size and mtime: the units are spread over :data:`BUCKETS` buckets by a
hash of their path, and a bucket whose files' ``path, size, mtime`` are unchanged keeps its result, so
a re-run decodes only the buckets with a changed, added or removed file.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from secvit.data.imagenet import LOAD_ERRORS
from secvit.data.layout import ADE20K_CLASSES, Scanned, Unit

VERSION = 1  # of the checks: a cache of other checks is not reused
BUCKETS = 4096
CHUNK = 128  # units per task of a worker
INLINE = 2000  # fewer units to decode than this: no worker processes (their start costs more)
MASK_MODES = ("L", "P")
#: Where a bad file of each dataset is restored from.
ARCHIVES = {
    "imagenet": "the ImageNet archive it came from",
    "coco": "train2017.zip / val2017.zip",
    "ade20k": "ADEChallengeData2016.zip",
}


@dataclass
class Verification:
    """What :func:`verify` found: ``bad`` maps a unit's image (relative path) to its problem."""

    bad: dict[str, str]
    cache: dict[str, Any]  # to pass to the next verify() of the same dataset
    checked: int  # units decoded this time (the others came from the cache)
    total: int
    listing: list[tuple[str, int]]  # (path, size) of every image, mask and label file, sorted


def fix(kind: str) -> str:
    """The one-line fix of a bad file of dataset ``kind``."""
    return f"restore it from {ARCHIVES[kind]} (it is left out until then)"


def _error(e: BaseException) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= 160 else text[:157] + "..."


def _decode(path: str) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image (JPEG at 1/8 scale) and its full size; raises what PIL raises."""
    image = Image.open(path)
    size = image.size
    if image.format == "JPEG":
        image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
    image.load()
    return image, size


def check_unit(root: str, unit: Unit, max_label: int = ADE20K_CLASSES) -> str | None:
    """The problem of one unit (see the module docstring), or None."""
    image_rel, mask_rel, expect = unit
    path = os.path.join(root, image_rel)
    try:
        if os.path.getsize(path) == 0:
            return "is empty (0 bytes)"
        image, size = _decode(path)
        image.close()
    except FileNotFoundError:
        return "is missing"
    except LOAD_ERRORS as e:
        return f"cannot be decoded ({_error(e)})"
    if expect is not None and tuple(size) != tuple(expect):
        return f"is {size[0]}x{size[1]} pixels but its annotation file says {expect[0]}x{expect[1]}"
    if mask_rel is None:
        return None
    try:
        with Image.open(os.path.join(root, mask_rel)) as mask:
            mask.load()
            mode, mask_size = mask.mode, mask.size
            labels = np.asarray(mask) if mode in MASK_MODES else None
    except FileNotFoundError:
        return f"its mask {mask_rel} is missing"
    except LOAD_ERRORS as e:
        return f"its mask {mask_rel} cannot be decoded ({_error(e)})"
    if labels is None:
        return f"its mask {mask_rel} is mode {mode}, not one channel of class indices (L or P)"
    if mask_size != size:
        return f"its mask {mask_rel} is {mask_size[0]}x{mask_size[1]} pixels but the image {size[0]}x{size[1]}"
    top = int(labels.max()) if labels.size else 0
    if top > max_label:
        return f"its mask {mask_rel} holds label {top}; labels are 0-{max_label}"
    return None


def _check_chunk(root: str, units: Sequence[Unit], max_label: int) -> list[tuple[str, str]]:
    return [(u[0], problem) for u in units if (problem := check_unit(root, u, max_label)) is not None]


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, 0
    return st.st_size, st.st_mtime_ns


def _bucket(rel: str) -> int:
    return zlib.crc32(rel.encode("utf-8", "surrogateescape")) % BUCKETS


def _cache_key(kind: str, root: str, scanned: Scanned, max_label: int) -> str:
    """What a cached result depends on besides the units' own files: the checks, and COCO's annotation files (sizes)."""
    parts = [str(VERSION), kind, str(max_label)]
    if kind == "coco":
        parts += [f"{rel}:{_stat(os.path.join(root, rel))}" for rel in scanned.label_files]
    return "|".join(parts)


def verify(
    root: str | os.PathLike,
    kind: str,
    scanned: Scanned,
    cache: dict[str, Any] | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    max_label: int = ADE20K_CLASSES,
) -> Verification:
    """Check every unit of ``scanned`` (see the module docstring), reusing ``cache`` where its files are unchanged.

    ``workers`` > 1 decodes in that many processes. ``progress(done, total)`` is called as units are decoded.
    """
    root = os.fspath(root)
    lines: list[list[str]] = [[] for _ in range(BUCKETS)]
    listing: list[tuple[str, int]] = []
    missing: dict[str, str] = {}
    for unit in scanned.units:
        lines_of = lines[_bucket(unit[0])]
        for rel in (unit[0], unit[1]):
            if rel is None:
                continue
            size, mtime = _stat(os.path.join(root, rel))
            lines_of.append(f"{rel}\t{size}\t{mtime}")
            if size < 0:
                missing.setdefault(unit[0], "is missing" if rel == unit[0] else f"its mask {rel} is missing")
            else:
                listing.append((rel, size))
    for rel in scanned.label_files:
        size, _ = _stat(os.path.join(root, rel))
        listing.append((rel, max(size, 0)))
    digests = {str(i): hashlib.sha256("\n".join(sorted(b)).encode("utf-8", "surrogateescape")).hexdigest()[:16]
               for i, b in enumerate(lines) if b}
    key = _cache_key(kind, root, scanned, max_label)
    usable = cache is not None and cache.get("version") == VERSION and cache.get("key") == key
    kept = {i for i, d in digests.items() if usable and cache["buckets"].get(i) == d}
    bad = {rel: problem for rel, problem in (cache or {}).get("bad", {}).items() if str(_bucket(rel)) in kept} if usable else {}
    todo = [u for u in scanned.units if str(_bucket(u[0])) not in kept and u[0] not in missing]
    bad.update(missing)
    if progress:
        progress(0, len(todo))
    if workers > 1 and len(todo) >= INLINE:
        chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
        done = 0
        # fork: a spawned worker would import secvit (torch, timm) again, seconds each
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_check_chunk, root, chunk, max_label): len(chunk) for chunk in chunks}
            for future in as_completed(futures):
                bad.update(future.result())
                done += futures[future]
                if progress:
                    progress(done, len(todo))
    else:
        for i in range(0, len(todo), CHUNK):
            bad.update(_check_chunk(root, todo[i : i + CHUNK], max_label))
            if progress:
                progress(min(i + CHUNK, len(todo)), len(todo))
    return Verification(
        bad=dict(sorted(bad.items())),
        cache={"version": VERSION, "key": key, "buckets": digests, "bad": dict(sorted(bad.items()))},
        checked=len(todo),
        total=len(scanned.units),
        listing=sorted(listing),
    )
