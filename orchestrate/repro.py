"""`secvit repro all`: run what is stale in one profile's part of the DAG, through DVC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from secvit.errors import SecvitError
from secvit.params import check_profile
from secvit.runs import PLOTS, TABLES, logs_dir, results_root, tables_file
from secvit.orchestrate.slurm import stage_env

if TYPE_CHECKING:
    from secvit.orchestrate.dag import StalePlan


def targets(profile: str) -> list[str]:
    """The final stages of a profile; `dvc repro` runs everything upstream that is stale."""
    return [f"tables@{profile}", f"figures@{profile}"]


def run_stages(params: dict[str, Any], profile: str) -> dict[str, list[str]]:
    """The profile's runs (keys as in results/<profile>/: ``secvit_tiny``, ``secvit_tiny-no_lce``,
    ``secvit_small-c64-16-4-1``, ``secvit_tiny-mask_rcnn-1x``) -> the dvc.yaml stages that make them."""
    found: dict[str, list[str]] = {}
    prefix = f"{profile}-"
    for group, stages in (("runs", ("pretrain", "evaluate")), ("detection_runs", ("detect",)), ("segmentation_runs", ("segment",))):
        for key, run in (params.get(group) or {}).items():
            if run.get("profile") == profile:
                found[key.removeprefix(prefix)] = [f"{stage}@{key}" for stage in stages]
    sweep, ablations = params.get("sweep") or {}, params.get("ablations") or {}
    for clusters in sweep.get("clusters") or []:
        found[f"{sweep['model']}-c{clusters}"] = [f"sweep@{profile}-{clusters}"]
    for variant in ablations.get("variants") or []:
        found[f"{ablations['model']}-{variant}"] = [f"ablate@{profile}-{variant}"]
    return found


def table_stages(params: dict[str, Any], profile: str, table: str) -> list[str]:
    """The stages whose results table ``table`` (``table1`` ... ``table8``) of the paper shows."""
    from secvit.tables.paper import load_paper_tables

    tables = load_paper_tables()
    if table not in tables:
        raise SecvitError(f"unknown table {table!r}; the paper's tables are {', '.join(tables)}")
    task = tables[table].task
    runs = params.get("runs") or {}
    mine = {k: r for k, r in runs.items() if r.get("profile") == profile}
    if task == "classification":
        return [f"complexity@{profile}", *(f"{s}@{k}" for k in mine for s in ("pretrain", "evaluate"))]
    if task in ("detection", "segmentation"):
        group, stage = ("detection_runs", "detect") if task == "detection" else ("segmentation_runs", "segment")
        settings = [{k: v for k, v in sec.setting.items() if k != "iters"} for sec in tables[table].sections]
        return [
            f"{stage}@{key}"
            for key, run in (params.get(group) or {}).items()
            if run.get("profile") == profile and any(all(run.get(k) == v for k, v in s.items()) for s in settings)
        ]
    if task == "ablation":
        model = params["ablations"]["model"]
        return [f"complexity@{profile}", f"pretrain@{profile}-{model}", *(f"ablate@{profile}-{v}" for v in params["ablations"]["variants"])]
    if task == "clusters":
        model = params["sweep"]["model"]
        return [f"complexity@{profile}", f"pretrain@{profile}-{model}", *(f"sweep@{profile}-{c}" for c in params["sweep"]["clusters"])]
    return [f"complexity@{profile}"]  # architecture: the measured structure and complexity


def resolve_targets(root: Path, profile: str, names: list[str] | None) -> list[str]:
    """``secvit repro`` targets as dvc.yaml stage names: ``all`` (the default: the whole profile), a
    table (``table4``: what it shows), a run key (``secvit_tiny``, ``secvit_tiny-mask_rcnn-1x``: the
    stages that make that run) or a dvc.yaml stage or stage group name (``pretrain@smoke-secvit_tiny``)."""
    from secvit.params import load_params

    if not names:
        return targets(profile)
    params = load_params(root / "params.yaml")
    runs = run_stages(params, profile)
    groups = set((yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {})
    stages: list[str] = []
    for name in names:
        if name == "all":
            stages += targets(profile)
        elif re.fullmatch(r"table\d+", name):
            found = table_stages(params, profile, name)
            if not found:
                raise SecvitError(f"the {profile} profile has no runs for {name} (params.yaml lists them)")
            stages += found
        elif name in runs:
            stages += runs[name]
        elif "@" in name or name in groups:
            stages.append(name)  # a stage or a stage group; stale_stages checks it against dvc.yaml
        else:
            raise SecvitError(
                f"unknown target {name!r}: give all, a table (table1 ... table8), a run of the {profile} profile "
                f"({', '.join(list(runs)[:3])}, ...) or a dvc.yaml stage name"
            )
    return list(dict.fromkeys(stages))


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


def planned_stages(root: Path, profile: str, stages: list[str]) -> list[StalePlan]:
    """The stages that ``dvc repro`` of ``stages`` would run (:func:`stale_stages`), less those that
    ``peers.<profile>: false`` leaves out (``secvit plan`` shows their cost apart); both executors run these."""
    from dataclasses import replace

    from secvit.orchestrate.dag import stale_stages
    from secvit.orchestrate.plan import left_out_peers

    peers = left_out_peers(root / "params.yaml", profile)
    plans = stale_stages(root, stages)
    return [replace(p, upstream=tuple(u for u in p.upstream if u not in peers)) for p in plans if p.name not in peers]


def repro_local(profile: str, root: Path = Path("."), jobs: int | None = None, names: list[str] | None = None) -> Path:
    """Run the stale stages of the profile (or of the targets ``names``, :func:`resolve_targets`)
    here; returns the tables path. One job: ``dvc repro`` of those stages; more: that many stages
    side by side (:func:`secvit.orchestrate.dag.run_parallel`)."""
    check_profile(profile)
    check_repo(root)
    if jobs is not None and jobs < 1:
        raise SecvitError(f"--jobs must be at least 1, got {jobs}")
    stages = resolve_targets(root, profile, names)
    from secvit.orchestrate.plan import left_out_peers

    peers = left_out_peers(root / "params.yaml", profile)  # `peers.<profile>: false`: not run (run_parallel can leave stages out)
    if jobs != 1 or peers:
        from secvit.orchestrate.dag import relink, run_parallel

        project = root.resolve()
        plans = planned_stages(project, profile, stages)
        if not plans:
            print(f"Data and pipelines are up to date: nothing is stale upstream of {', '.join(stages)}")
            return root / tables_file(profile)
        jobs = jobs or default_jobs()  # only now: deciding imports torch
        if jobs > 1 or peers:
            run_parallel(project, plans, jobs, project / logs_dir(profile))
            relink(project, [p.name for p in plans])
            return root / tables_file(profile)
    result = subprocess.run([dvc_executable(), "repro", *stages], cwd=root, env=stage_env())
    if result.returncode != 0:
        raise SecvitError(f"dvc repro failed (exit {result.returncode}); the failing stage's output is above")
    from secvit.orchestrate.dag import relink

    relink(root, stages)
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
