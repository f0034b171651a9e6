"""The environment a stage command runs in, and which executor runs it.

Stage commands (``secvit ...`` from dvc.yaml) run here, side by side (:mod:`.dag`) or in SLURM jobs
(:mod:`.slurm`); each gets this interpreter's ``bin/`` first on PATH, so they run this ``secvit`` and
this ``dvc``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from secvit.errors import SecvitError

#: The executor of stage commands run without ``--executor`` (local or slurm); inside a SLURM job: local.
EXECUTOR_VAR = "SECVIT_EXECUTOR"
EXECUTORS = ("local", "slurm")


def stage_env() -> dict[str, str]:
    """This process's environment with its interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def executor_choice(executor: str | None) -> str:
    """``--executor`` if given, else ``$SECVIT_EXECUTOR``, else local; checked."""
    where = "--executor"
    if executor is None:
        executor, where = os.environ.get(EXECUTOR_VAR) or "local", EXECUTOR_VAR
    if executor not in EXECUTORS:
        raise SecvitError(f"unknown executor {executor!r} ({where}); choose local or slurm")
    return executor
