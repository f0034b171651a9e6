"""`secvit repro`: run what is stale in a profile's part of the DAG (or what targets need), through DVC.

Targets are resolved on the study model (:mod:`secvit.study`): ``all``, a paper table, a run key, a stage
or a stage group. The stale stages are DVC's (:func:`secvit.orchestrate.dag.stale_stages`), less those that
``peers.<profile>: false`` leaves out and those of a lane not run (``--lane``, params.yaml ``released.lanes``);
the local executor (here) and the SLURM executor (:mod:`.slurm_dag`) run exactly those.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import torch

from secvit.errors import SecvitError
from secvit.orchestrate.dag import StaleStage, dvc_executable, relink, run_parallel, stale_stages, target_closure
from secvit.orchestrate.env import stage_env
from secvit.params import check_profile
from secvit.runs import PLOTS, TABLES, logs_dir, results_root, tables_file
from secvit.runs import LANES
from secvit.study import FINAL_KINDS, Study, check_lanes, load_study
from secvit.tables.paper import load_paper_tables


def resolve_targets(study: Study, profile: str, names: list[str] | None, lanes: list[str] | None = None) -> list[str]:
    """``secvit repro`` targets as dvc.yaml stage names: ``all`` (the default: the profile's tables and
    figures), a table (``table4``: the stages whose results it shows), a run key (``secvit_tiny``,
    ``secvit_tiny-mask_rcnn-1x``: the stages that make that run; ``released:secvit_tiny``: the released lane's),
    a stage (``pretrain@smoke-secvit_tiny``) or a stage group (``data-smoke``: its stages in the profile).

    Only the lanes run (``lanes``; default params.yaml ``released.lanes``): ``table3`` with ``--lane released`` is
    the released lane's dense runs. With one lane, ``all`` is that lane's stages (:func:`one_lane`)."""
    check_profile(profile)
    names = list(names or ["all"])
    found = _resolve(study, profile, names, one_lane(study, profile, lanes))
    skipped = {s for s in study.left_out(profile, lanes) if study[s].lane}
    kept = [name for name in found if name not in skipped]
    if found and not kept:
        raise SecvitError(f"{', '.join(names)}: nothing in the {'/'.join(_lanes(study, profile, lanes))} lane of the {profile} profile")
    return kept


def _lanes(study: Study, profile: str, lanes: list[str] | None) -> tuple[str, ...]:
    return check_lanes(lanes) if lanes else study.lanes.get(profile, LANES)


def one_lane(study: Study, profile: str, lanes: list[str] | None) -> bool:
    """True when only one lane runs. ``all`` is then its stages, not the tables: the tables stage reads both lanes'
    results and DVC records it only once both exist (``secvit repro`` renders the tables itself then)."""
    return len(_lanes(study, profile, lanes)) < len(LANES)


def _resolve(study: Study, profile: str, names: list[str], lane_only: bool) -> list[str]:
    runs = study.runs(profile)
    groups = {s.group for s in study.stages}
    stages: list[str] = []
    for name in names:
        if name == "all" and lane_only:
            stages += [s.name for s in study.of(profile) if s.kind not in FINAL_KINDS]
        elif name == "all":
            stages += study.final(profile)
        elif re.fullmatch(r"table\d+", name):
            tables = load_paper_tables()
            if name not in tables:
                raise SecvitError(f"unknown table {name!r}; the paper's tables are {', '.join(tables)}")
            found = study.showing(profile, name)
            if not found:
                raise SecvitError(f"the {profile} profile has no runs for {name} (params.yaml lists them)")
            stages += found
        elif name in runs:
            stages += runs[name]
        elif name in study:
            stages.append(name)
        elif name in groups:
            found = [s.name for s in study.of(profile) if s.group == name]
            if not found:
                raise SecvitError(f"stage group {name!r} has no stages in the {profile} profile")
            stages += found
        else:
            raise SecvitError(
                f"unknown target {name!r}: give all, a table (table1 ... table8), a run of the {profile} profile "
                f"({', '.join(list(runs)[:3])}, ...) or a dvc.yaml stage name"
            )
    return list(dict.fromkeys(stages))


def check_repo(root: Path) -> None:
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        raise SecvitError(f"{root} is not the secvit DVC project (no dvc.yaml or .dvc/); run from the repository root")


def default_jobs() -> int:
    """Stages side by side by default: one where CUDA GPUs are visible (each stage uses all of
    them), else one per CPU core, at most 4 (each stage then gets the cores' share of threads)."""
    return 1 if torch.cuda.is_available() else max(1, min(4, os.cpu_count() or 1))


def stages_to_run(root: Path, study: Study, profile: str, targets: list[str], lanes: list[str] | None = None,
                  explain: bool = False) -> list[StaleStage]:
    """The stages that ``dvc repro`` of ``targets`` would run (:func:`stale_stages`), less those that
    ``peers.<profile>: false`` leaves out (``secvit plan`` shows their cost apart) and those of the lanes not run;
    both executors run these."""
    peers = study.left_out(profile, lanes)
    stale = stale_stages(root, targets, explain)
    return [dataclasses.replace(s, upstream=tuple(u for u in s.upstream if u not in peers)) for s in stale if s.name not in peers]


def repro_local(profile: str, root: Path = Path("."), jobs: int | None = None, names: list[str] | None = None,
                lanes: list[str] | None = None, dry_run: bool = False) -> Path:
    """Run the stale stages of the profile (or of the targets ``names``, :func:`resolve_targets`)
    here; returns the tables path. One job: ``dvc repro`` of those stages; more: that many stages
    side by side (:func:`secvit.orchestrate.dag.run_parallel`). ``dry_run``: print what each stage would get, and why."""
    check_profile(profile)
    check_repo(root)
    if jobs is not None and jobs < 1:
        raise SecvitError(f"--jobs must be at least 1, got {jobs}")
    study = load_study(root / "params.yaml")
    targets = resolve_targets(study, profile, names, lanes)
    peers = study.left_out(profile, lanes)  # `peers.<profile>: false`, other lanes: not run (run_parallel can leave stages out)
    if dry_run:
        project = root.resolve()
        stale = {s.name: s for s in stages_to_run(project, study, profile, targets, lanes, explain=True)}
        for name in (n for n in target_closure(project, targets) if n not in peers):
            stage = stale.get(name)
            if stage is None:
                print(f"{name}: up to date (nothing it depends on changed since dvc.lock recorded it)")
            elif stage.conditional:
                print(f"{name}: check once its upstream stages ran (runs only if they change its dependencies: {', '.join(stage.upstream)})")
            else:
                print(f"{name}: run ({stage.why or 'stale'})")
        print("dry run: nothing was run")
        return root / tables_file(profile)
    if jobs != 1 or peers:
        project = root.resolve()
        stale = stages_to_run(project, study, profile, targets, lanes)
        if not stale:
            print(f"Data and pipelines are up to date: nothing is stale upstream of {', '.join(targets)}")
            return root / tables_file(profile)
        jobs = jobs or default_jobs()
        if jobs > 1 or peers:
            run_parallel(project, stale, jobs, project / logs_dir(profile))
            relink(project, [s.name for s in stale])
            return root / tables_file(profile)
    result = subprocess.run([dvc_executable(), "repro", *targets], cwd=root, env=stage_env())
    if result.returncode != 0:
        raise SecvitError(f"dvc repro failed (exit {result.returncode}); the failing stage's output is above")
    relink(root, targets)
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
