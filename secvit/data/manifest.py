"""Small, deterministic dataset manifests that DVC tracks instead of the image trees.

A manifest holds the counts a layout check produced, the number of files, their total
size and a SHA-256 (``listing_sha256``) over the sorted ``relative_path<TAB>size<LF>``
lines of every file (paths relative to the root, ``/``-separated, UTF-8): adding,
removing, renaming or resizing any file changes it; nothing is read but directory
entries and ``stat`` (a same-size in-place edit is not detected). The data stage lists
the dataset's own files (images, masks, label files: :mod:`secvit.data.verify`), not
whatever else lies under the root; ``bad`` maps each image that verification found bad
to its problem (the loaders leave these out). No mtime goes in: a copied dataset keeps
its manifest, so nothing downstream re-runs. Nor does the root: the manifest is the dataset's identity
(its files and sizes), wherever it lies, so moving a dataset leaves every result current. The
verification's cache, which holds mtimes and the root it checked, is a file of its own beside it
(:func:`read_cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from secvit.atomic import write_json
from secvit.data.layout import DatasetCounts
from secvit.errors import SecvitError

MANIFEST_KEYS = ("bad", "bytes", "counts", "files", "kind", "listing_sha256")


def listing_fingerprint(listing: Iterable[tuple[str, int]]) -> tuple[int, int, str]:
    """``(files, total_bytes, listing_sha256)`` of ``(relative path, size)`` pairs."""
    lines = sorted(f"{rel}\t{size}\n" for rel, size in listing)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape"))
    return len(lines), sum(int(line.rsplit("\t", 1)[1]) for line in lines), digest.hexdigest()


def tree_fingerprint(root: str | os.PathLike, exclude: set[str] | None = None) -> tuple[int, int, str]:
    """``(files, total_bytes, listing_sha256)`` of the tree under ``root``.

    Symlinked files and folders are followed (a folder cycle is visited once); ``exclude``
    holds absolute paths to leave out (e.g. a manifest written inside the tree).
    """
    exclude = exclude or set()
    listing: list[tuple[str, int]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, str]] = [(os.path.abspath(root), "")]
    while stack:
        path, rel = stack.pop()
        st = os.stat(path)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(path) as it:
            for entry in it:
                if entry.path in exclude:
                    continue
                if entry.is_dir():
                    stack.append((entry.path, f"{rel}{entry.name}/"))
                elif entry.is_file():
                    listing.append((f"{rel}{entry.name}", entry.stat().st_size))
    return listing_fingerprint(listing)


def manifest_of(
    root: str | os.PathLike,
    kind: str,
    counts: DatasetCounts | Mapping[str, Any],
    exclude: set[str] | None = None,
    listing: Iterable[tuple[str, int]] | None = None,
    bad: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest dict of the dataset at ``root`` (nothing written): of the files in ``listing``, or else
    of every file under ``root`` but those in ``exclude``."""
    path = Path(root)
    if not path.is_dir():
        raise SecvitError(f"cannot write a manifest for {path}: not a directory; pass the dataset root")
    files, size, sha = tree_fingerprint(path, exclude) if listing is None else listing_fingerprint(listing)
    return {
        "bad": dict(sorted((bad or {}).items())),
        "kind": kind,
        "counts": counts.to_dict() if isinstance(counts, DatasetCounts) else dict(counts),
        "files": files,
        "bytes": size,
        "listing_sha256": sha,
    }


def write_manifest(
    root: str | os.PathLike,
    kind: str,
    counts: DatasetCounts | Mapping[str, Any],
    out_path: str | os.PathLike,
    listing: Iterable[tuple[str, int]] | None = None,
    bad: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write (and return) the manifest: sorted keys, no timestamps, so unchanged data gives identical bytes.

    The file is rewritten only when its content changes (its mtime stays too).
    """
    out = Path(out_path)
    data = manifest_of(root, kind, counts, exclude={os.path.abspath(out)}, listing=listing, bad=bad)
    write_json(out, data)
    return data


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a manifest written by :func:`write_manifest`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SecvitError(f"dataset manifest {path} does not exist; run `secvit data` first") from None
    except (OSError, ValueError) as e:
        raise SecvitError(f"dataset manifest {path} cannot be read ({type(e).__name__}); delete it and rerun `secvit data`") from None
    if not isinstance(data, dict) or not set(MANIFEST_KEYS) <= set(data):
        raise SecvitError(f"{path} is not a dataset manifest (needs {', '.join(MANIFEST_KEYS)}); delete it and rerun `secvit data`")
    return data


def read_cache(path: str | os.PathLike) -> dict[str, Any] | None:
    """The verification cache at ``path``; None if there is none or it cannot be read (it is then rebuilt)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("buckets"), dict) and isinstance(data.get("bad"), dict) else None
