"""Which code computed a result: the git commit of the code and whether its tree was dirty.

Every stage's ``metrics.json`` (and ``eval.json``) holds :func:`code_version` under ``code``. A stage run by a
SLURM job runs a snapshot of the code taken when the job was planned (``secvit repro --executor slurm``):
the snapshot carries the version of the tree it was copied from (:data:`VERSION_FILE`, written with
:func:`git_state`), since it has no git history of its own. Anywhere else the version is read from git.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["VERSION_FILE", "code_version", "git_state"]

#: In a code snapshot, beside this module: the git state of the tree it was copied from.
VERSION_FILE = "CODE_VERSION.json"
PACKAGE = Path(__file__).resolve().parent
#: tracked files that change without the code changing: DVC's record of the stages, and their parameters
NOT_CODE = ("dvc.lock", "params.yaml")


def git_state(root: Path) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the git work tree at ``root``: HEAD's commit, and whether tracked
    files differ from it or new files lie beside them (ignored ones aside). DVC's record (``dvc.lock``, rewritten
    as each stage of a repro completes) and the parameters (``params.yaml``, which DVC records per stage) do not
    count: the flag is about the code. None for both outside git."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--", ".", *(f":(exclude){p}" for p in NOT_CODE)) if head.returncode == 0 else None
    except OSError:  # no git here
        return {"git_commit": None, "git_dirty": None}
    if head.returncode != 0 or status is None or status.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def code_version() -> dict[str, Any]:
    """The version of the code running now: ``git_commit``, ``git_dirty`` and, in the code snapshot a SLURM job
    runs, ``snapshot`` (its content hash). Outside a snapshot the key is absent, not None: DVC shows no null
    metrics, so a None would make ``dvc exp show`` differ from the file it read."""
    recorded = PACKAGE / VERSION_FILE
    if recorded.is_file():
        data = json.loads(recorded.read_text())
        return {"git_commit": data.get("git_commit"), "git_dirty": data.get("git_dirty"), "snapshot": data.get("snapshot")}
    return git_state(PACKAGE.parent)
