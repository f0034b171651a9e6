"""The code a SLURM job runs: an immutable snapshot of the package, taken when the job is planned.

A job imports its code when it starts, and again when SLURM requeues it, days later; by then the working tree
may hold other code. So ``secvit repro --executor slurm`` copies the code (``secvit/`` and the folders
pyproject.toml installs inside it: ``cli/``, ``pipelines/``, ``orchestrate/``) into
``<slurm.folder>/code/<hash>/`` laid out as the installed package, named by the hash of its files' contents
(the same code is one snapshot), and every job, requeues included, runs with that folder first on
``PYTHONPATH``. The snapshot records the git state it was copied from (:func:`secvit.provenance.git_state`), which
the stages write into their metrics, and the hash of each file (``files.json``), which tells, when the job
ends, which files of the stage's dependencies changed since (:func:`changed_files`). Once no job needs a
snapshot any more it is removed (:func:`prune_snapshots`): the results it computed keep its hash and git state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

from secvit.provenance import VERSION_FILE, git_state

__all__ = ["Snapshot", "changed_files", "code_files", "prune_snapshots", "take_snapshot"]

FILES = "files.json"  # written last: a snapshot folder without it is incomplete
#: an unneeded snapshot is removed once untouched this long: one another orchestrator has just taken, for jobs it
#: has not recorded yet, stays
KEEP_FRESH_S = 24 * 3600


@dataclass(frozen=True)
class Snapshot:
    path: Path  # put first on PYTHONPATH: it holds the package ``secvit``
    tree: str  # hash of the files' contents
    files: dict[str, str]  # repository path -> sha256


def _layout(root: Path) -> dict[str, str]:
    """Repository folder -> its package folder in the snapshot (``cli`` -> ``secvit/cli``), from pyproject.toml."""
    dirs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {})
    return {"secvit": "secvit", **{folder: package.replace(".", "/") for package, folder in dirs.items()}}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_files(root: Path, under: list[str] | None = None) -> dict[str, str]:
    """Repository path -> sha256 of every file of the package folders (or of those below ``under``), caches aside."""
    found: dict[str, str] = {}
    for folder in _layout(root):
        for dirpath, dirnames, filenames in os.walk(root / folder):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in filenames:
                if name.endswith((".pyc", ".pyo")):
                    continue
                rel = (Path(dirpath) / name).relative_to(root).as_posix()
                if under is None or any(rel == u or rel.startswith(u.rstrip("/") + "/") for u in under):
                    found[rel] = _sha(root / rel)
    return found


def take_snapshot(root: Path, store: Path) -> Snapshot:
    """The snapshot of the code at ``root`` in ``store`` (made once per content)."""
    files = code_files(root)
    tree = hashlib.sha256("".join(f"{p}\t{h}\n" for p, h in sorted(files.items())).encode()).hexdigest()[:20]
    dest = store / tree
    if (dest / FILES).is_file():
        os.utime(dest)  # taken again: fresh (prune_snapshots)
        return Snapshot(dest, tree, files)
    layout = _layout(root)
    building = store / f".{tree}.{uuid.uuid4().hex[:8]}"
    for rel in files:
        top, _, rest = rel.partition("/")
        target = building / layout[top] / rest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
        target.chmod(0o444)
    (building / "secvit" / VERSION_FILE).write_text(json.dumps({**git_state(root), "snapshot": tree}, indent=1))
    (building / FILES).write_text(json.dumps(files, indent=1, sort_keys=True))
    try:
        building.rename(dest)
    except OSError:  # another process made the same snapshot first
        shutil.rmtree(building, ignore_errors=True)
    return Snapshot(dest, tree, files)


def recorded_files(snapshot: str | Path) -> dict[str, str]:
    """The file hashes a snapshot was made of (empty when the snapshot is gone)."""
    try:
        return json.loads((Path(snapshot) / FILES).read_text())
    except (OSError, ValueError):
        return {}


def changed_files(root: Path, snapshot: str | Path, deps: list[str]) -> list[str]:
    """The files below the dependency paths ``deps`` that differ now from the snapshot (changed, added or
    removed), as repository paths."""
    was = {p: h for p, h in recorded_files(snapshot).items() if any(p == d or p.startswith(d.rstrip("/") + "/") for d in deps)}
    now = code_files(root, deps)
    return sorted(p for p in was.keys() | now.keys() if was.get(p) != now.get(p))


def prune_snapshots(store: Path, needed: set[str], fresh_s: float = KEEP_FRESH_S) -> list[str]:
    """Remove the snapshots in ``store`` that are not ``needed`` (the paths that recorded jobs not yet committed
    run: a requeue imports them again) and were not taken for ``fresh_s`` seconds; half-built ones of a dead
    process too. Returns the names removed."""
    keep = {Path(p).resolve() for p in needed}
    removed = []
    for folder in sorted(store.iterdir()) if store.is_dir() else []:
        if folder.resolve() in keep or time.time() - folder.stat().st_mtime < fresh_s:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed
