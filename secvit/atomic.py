"""Atomic file writes: a temporary file in the same directory, then a rename.

A reader (or a resumed run) sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, flush it to disk and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; keep the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def own_copy(path: str | os.PathLike) -> None:
    """Make ``path`` a file of its own before writing to it in place (appending): DVC links the files of
    its outputs to its cache (hardlinks or symlinks, ``.dvc/config``), and an in-place write through
    such a link would change the cached copy. Files written by :func:`atomic_write` need none of this."""
    path = Path(path)
    if path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1):
        data = path.read_bytes()
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it (its mtime then stays). True if written."""
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline="\n"))
    return True


def write_json(path: str | os.PathLike, data: Any) -> bool:
    """JSON with sorted keys and no timestamps, so unchanged results give identical files."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
