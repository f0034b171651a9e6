"""One orchestrator per study and profile: ``secvit repro --executor slurm`` holds a lock while it plans, submits,
watches and commits.

The lock is ``<slurm.folder>/<profile>/orchestrator.lock``: an exclusive ``flock`` on the file, held as long as
the process lives (the kernel, or the NFS lock manager, releases it when the holder dies, however it dies),
and in the file the holder's host, pid and start time, which a second orchestrator names when it refuses.
A file whose holder is dead holds no lock: the next orchestrator takes it over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError

LOCK_FILE = "orchestrator.lock"


def holder(path: Path) -> dict[str, Any]:
    """What the lock file says of its holder (empty if unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path``."""
    if not path.exists():
        return False
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


class OrchestratorLock:
    """The study's orchestrator lock of one profile (a context manager); :meth:`acquire` refuses in one line."""

    def __init__(self, folder: Path, profile: str) -> None:
        self.path = folder / LOCK_FILE
        self.profile = profile
        self._file: Any = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            who = holder(self.path)
            by = f"on {who.get('host', '?')} (pid {who.get('pid', '?')}, since {who.get('started', '?')})" if who else "by another process"
            raise SecvitError(
                f"another `secvit repro` runs the {self.profile} profile of this study {by}; it submits and commits its "
                f"jobs: watch them with `secvit repro status --profile {self.profile}` (this one changed nothing)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()  # no holder to name
            self._file.flush()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> OrchestratorLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
