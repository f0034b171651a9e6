"""`secvit repro all`: run what is stale in one profile's part of the DAG, through DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from secvit.errors import SecvitError
from secvit.params import check_profile
from secvit.runs import PLOTS, TABLES, logs_dir, results_root, tables_file
from secvit.orchestrate.slurm import stage_env


def targets(profile: str) -> list[str]:
    """The final stages of a profile; `dvc repro` runs everything upstream that is stale."""
    return [f"tables@{profile}", f"figures@{profile}"]


def dvc_executable() -> str:
    """DVC from the same environment as this secvit."""
    local = Path(sys.executable).with_name("dvc")
    found = str(local) if local.exists() else shutil.which("dvc")
    if not found:
        raise SecvitError("dvc is not installed in this environment; run scripts/env.sh")
    return found


def check_repo(root: Path) -> None:
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        raise SecvitError(f"{root} is not the secvit DVC project (no dvc.yaml or .dvc/); run from the repository root")


def default_jobs() -> int:
    """Stages side by side by default: one where CUDA GPUs are visible (each stage uses all of
    them), else one per CPU core, at most 4 (each stage then gets the cores' share of threads)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(4, os.cpu_count() or 1))


def repro_local(profile: str, root: Path = Path("."), jobs: int | None = None) -> Path:
    """Run the profile's stale stages here; returns the tables path. One job: ``dvc repro`` of the
    profile's targets; more: that many stages side by side (:func:`secvit.orchestrate.dag.run_parallel`)."""
    check_profile(profile)
    check_repo(root)
    if jobs is not None and jobs < 1:
        raise SecvitError(f"--jobs must be at least 1, got {jobs}")
    from secvit.orchestrate.plan import left_out_peers

    peers = left_out_peers(root / "params.yaml", profile)  # `peers.<profile>: false`: not run (run_parallel can leave stages out)
    if jobs != 1 or peers:
        from dataclasses import replace

        from secvit.orchestrate.dag import run_parallel, stale_stages

        project = root.resolve()
        plans = stale_stages(project, targets(profile))
        plans = [replace(p, upstream=tuple(u for u in p.upstream if u not in peers)) for p in plans if p.name not in peers]
        if not plans:
            print(f"Data and pipelines are up to date: nothing is stale upstream of {', '.join(targets(profile))}")
            return root / tables_file(profile)
        jobs = jobs or default_jobs()  # only now: deciding imports torch
        if jobs > 1 or peers:
            run_parallel(project, plans, jobs, project / logs_dir(profile))
            return root / tables_file(profile)
    result = subprocess.run([dvc_executable(), "repro", *targets(profile)], cwd=root, env=stage_env())
    if result.returncode != 0:
        raise SecvitError(f"dvc repro failed (exit {result.returncode}); the failing stage's output is above")
    return root / tables_file(profile)


def point_latest(profile: str, root: Path = Path(".")) -> Path:
    """Symlinks ``results/tables.md`` and ``results/plots`` to the profile just built.

    Convenience pointers for people (the DVC outputs stay in ``results/<profile>/``);
    returns ``results/tables.md``.
    """
    results = root / results_root(profile).parent
    for name in (TABLES, PLOTS):
        link = results / name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            raise SecvitError(f"{link} exists and is not a link; move it away")
        link.symlink_to(Path(profile) / name)
    return results / TABLES
