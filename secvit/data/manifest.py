"""Small, deterministic dataset manifests that DVC tracks instead of the image trees.

A manifest holds the counts a layout check produced, the number of files, their total
size and a SHA-256 over the sorted ``relative_path<TAB>size`` lines of every file:
adding, removing or resizing any file changes it; nothing is read but directory entries.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from secvit.data.layout import DatasetCounts


def _walk(root: Path) -> list[tuple[str, int]]:
    files: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    files.append((os.path.relpath(entry.path, root), entry.stat().st_size))
    return sorted(files)


def manifest_of(root: str | os.PathLike, kind: str, counts: DatasetCounts) -> dict[str, Any]:
    root = Path(root)  # as configured: a relative root keeps the manifest independent of the checkout's location
    files = _walk(root)
    digest = hashlib.sha256()
    for path, size in files:
        digest.update(f"{path}\t{size}\n".encode())
    return {
        "kind": kind,
        "root": str(root),
        "counts": counts.to_dict(),
        "files": len(files),
        "bytes": sum(size for _, size in files),
        "listing_sha256": digest.hexdigest(),
    }


def write_manifest(root: str | os.PathLike, kind: str, counts: DatasetCounts, out_path: str | os.PathLike) -> dict[str, Any]:
    """Write the manifest (sorted keys, no timestamps: unchanged data gives identical bytes)."""
    data = manifest_of(root, kind, counts)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(out)
    return data


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
