"""The study: every stage of both profiles, parsed once from params.yaml.

``dvc.yaml`` declares the stages to DVC; this model names the same stages for everything that chooses,
costs or dispatches them: target resolution (``secvit repro table4``), the peers switch, the cost plan
(:mod:`secvit.cost`) and the SLURM settings of each job (:mod:`secvit.study.slurm`).
``tests/test_study.py`` holds ``dvc.yaml`` to it, stage for stage, command for command and dependency for
dependency.

A :class:`Stage` has

- ``name``: dvc.yaml's, ``<group>@<item>``: ``pretrain@smoke-secvit_tiny``, ``data-paper@coco``;
- ``kind``: what runs, one of :data:`~secvit.study.slurm.KINDS` (the table-6 and table-7 runs are ``pretrain`` stages);
- ``profile``, ``model`` (trained, evaluated or under a dense head) and ``run``, the run key
  (:func:`secvit.runs.run_key`, :func:`secvit.runs.downstream_key`): its folder below
  ``runs/<profile>/<task>/`` and ``results/<profile>/<task>/``;
- ``upstream``: the stages whose outputs it reads, as DVC links them;
- ``tables``: the paper tables that show its results (from ``secvit/tables/paper_results.yaml``);
- ``peer``: a run of a peer family (params.yaml ``peers``: STViT, PaCa-ViT), which no paper table prints;
- ``lane``: ``ours`` (our pretraining and what runs from it, figure 4 included) or ``released`` (the authors'
  checkpoints evaluated here, dense runs from them, the smoke profile's stand-ins for them); None for the stages
  both lanes share (data, complexity, tables). params.yaml ``released.lanes`` (``--lane``) chooses which run.

No stage imports this package: what a stage computes never depends on how the study is laid out.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secvit.data.config import DATASETS, DataConfig, data_config
from secvit.engine.config import PretrainConfig, recipe_of_run
from secvit.errors import SecvitError
from secvit.params import PROFILES, check_profile, from_section, load_params, profile_section, section
from secvit.released import PREFIX, lanes_of, released_checkpoints, released_model, section_of, stand_in
from secvit.runs import (
    DETECTION,
    LANES,
    OURS,
    PRETRAIN,
    RELEASED,
    SEGMENTATION,
    AblationConfig,
    SweepConfig,
    ablation_config,
    downstream_key,
    lane_task,
    parse_clusters,
    run_dir,
    run_key,
    sweep_config,
)
from secvit.study.slurm import KINDS, SlurmConfig
from secvit.tables.paper import PaperTable, load_paper_tables

__all__ = ["KINDS", "Peers", "Stage", "Study", "load_study"]

#: The command-line options that say which run a stage command makes (``--params``, ``--device`` do not).
IDENTIFYING = ("model", "clusters", "ablation", "detector", "schedule", "head", "dataset", "released")
#: The final stages of a profile: ``secvit repro all`` (and ``dvc repro``) runs what they need.
FINAL_KINDS = ("tables", "figures")


@dataclass(frozen=True)
class Stage:
    """One stage of the study (see the module docstring)."""

    name: str
    kind: str
    profile: str
    options: tuple[tuple[str, str], ...] = ()  # the command's options after --profile, in order
    upstream: tuple[str, ...] = ()
    model: str | None = None
    run: str | None = None
    task: str | None = None  # pretrain, detection, segmentation: the run's folder below runs/ and results/
    tables: tuple[str, ...] = ()
    peer: bool = False
    lane: str | None = None

    @property
    def group(self) -> str:
        """The dvc.yaml entry it comes from: ``pretrain``, ``sweep``, ``data-smoke``."""
        return self.name.split("@", 1)[0]

    @property
    def item(self) -> str:
        """The part after ``@``: ``smoke-secvit_tiny``, ``coco``."""
        return self.name.split("@", 1)[1]

    @property
    def command(self) -> str:
        """The ``secvit`` command it runs."""
        return "visualize-clusters" if self.kind == "figures" else self.kind

    @property
    def argv(self) -> list[str]:
        """``secvit <command> --profile <profile> --<option> <value> ...``: dvc.yaml's ``cmd``."""
        argv = ["secvit", self.command, "--profile", self.profile]
        for key, value in self.options:
            argv += [f"--{key}", value]
        return argv

    @property
    def cmd(self) -> str:
        return shlex.join(self.argv)

    def option(self, key: str) -> str | None:
        return dict(self.options).get(key)

    @property
    def target(self) -> str | None:
        """The run key ``secvit repro`` takes for it: its run, ``released:<run>`` in the released lane."""
        return None if not self.run else f"{PREFIX}{self.run}" if self.lane == RELEASED else self.run

    @property
    def slurm_keys(self) -> tuple[str, ...]:
        """The ``slurm.runs`` keys that name this stage, least specific first: its run key, its item, its name."""
        return tuple(dict.fromkeys(k for k in (self.run, self.item, self.name) if k))

    @property
    def outputs(self) -> Path | None:
        """The run folder it writes below ``runs/`` (a pretraining or dense stage), else None."""
        return run_dir(self.profile, self.run, self.task) if self.run and self.kind in ("pretrain", "detect", "segment") else None


@dataclass(frozen=True)
class Peers:
    """params.yaml ``peers``: the model name prefixes of the peer families, and whether each profile runs them."""

    families: tuple[str, ...]
    run: Mapping[str, bool]

    def of(self, model: str | None) -> bool:
        return model is not None and any(model.startswith(f) for f in self.families)


def check_lanes(lanes: Iterable[str]) -> tuple[str, ...]:
    """``--lane`` values (``released``, ``ours``, ``both``) as lanes, with a one-line error for anything else."""
    found: list[str] = []
    for lane in lanes:
        if lane == "both":
            found += LANES
        elif lane in LANES:
            found.append(lane)
        else:
            raise SecvitError(f"unknown lane {lane!r}; choose released, ours or both")
    return tuple(v for v in LANES if v in found)


def _peers(params: dict[str, Any]) -> Peers:
    peers = section(params, "peers")
    run = {}
    for profile in PROFILES:
        value = peers.get(profile, True)
        if not isinstance(value, bool):
            raise SecvitError(f"setting 'peers.{profile}' must be true or false, got {value!r}")
        run[profile] = value
    return Peers(tuple(peers.get("families") or ()), run)


@dataclass
class Study:
    """The stages of both profiles (:func:`load_study`), upstream first, and the settings they share."""

    params: dict[str, Any]
    source: Path
    peers: Peers
    sweep: SweepConfig
    ablations: AblationConfig
    stages: list[Stage] = field(default_factory=list)
    lanes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # params.yaml released.lanes

    def __post_init__(self) -> None:
        self._by_name = {s.name: s for s in self.stages}

    # -- looking stages up

    def __getitem__(self, name: str) -> Stage:
        if name not in self._by_name:
            raise SecvitError(f"no stage {name!r} in the study (params.yaml); see `dvc stage list`")
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def of(self, profile: str) -> list[Stage]:
        """The stages of ``profile``, upstream first."""
        check_profile(profile)
        return [s for s in self.stages if s.profile == profile]

    def final(self, profile: str) -> list[str]:
        """The profile's final stages (its tables and figures); ``secvit repro all`` runs what they need."""
        return [s.name for s in self.of(profile) if s.kind in FINAL_KINDS]

    def runs(self, profile: str) -> dict[str, list[str]]:
        """Run key -> the stages that make that run (``secvit_tiny``: its pretraining and evaluation;
        ``released:secvit_tiny``: the released checkpoint's evaluation)."""
        found: dict[str, list[str]] = {}
        for stage in self.of(profile):
            if stage.target:
                found.setdefault(stage.target, []).append(stage.name)
        return found

    def showing(self, profile: str, table: str) -> list[str]:
        """The stages of ``profile`` whose results paper table ``table`` shows."""
        return [s.name for s in self.of(profile) if table in s.tables]

    def left_out(self, profile: str, lanes: Iterable[str] | None = None) -> set[str]:
        """The stages that ``peers.<profile>: false`` leaves out (none when it is true), and those of the lanes
        not run: not in ``lanes`` (``--lane``; default: params.yaml ``released.lanes.<profile>``)."""
        run = check_lanes(lanes) if lanes else self.lanes.get(profile, LANES)
        return {s.name for s in self.of(profile) if (s.peer and not self.peers.run[profile]) or (s.lane and s.lane not in run)}

    def closure(self, names: Iterable[str]) -> list[Stage]:
        """The stages ``names`` and everything upstream of them, upstream first."""
        todo, seen = list(names), set()
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self[name].upstream)
        return [s for s in self.stages if s.name in seen]

    def find(self, profile: str, command: str, options: Mapping[str, Any]) -> Stage | None:
        """The stage that ``secvit <command> --profile <profile> <options>`` runs, if it is one of the study's
        (``secvit pretrain --clusters 64-16-4-1`` is ``sweep@<profile>-64-16-4-1``); None for another run."""
        given = {k: str(options[k]) for k in IDENTIFYING if options.get(k) is not None}
        weights = options.get("weights") or options.get("checkpoint")
        lane = RELEASED if released_model(None if weights is None else str(weights)) or given.get("released") else OURS
        for stage in self.of(profile):
            own = {k: v for k, v in stage.options if k in IDENTIFYING}
            if stage.command == command and stage.lane in (None, lane) and given in (own, {**own, "model": stage.model}):
                return stage
        return None

    # -- what the stages read

    @functools.cached_property
    def slurm(self) -> SlurmConfig:
        """The ``slurm`` section (read on first use: a local run never needs it)."""
        return from_section(SlurmConfig, section(self.params, "slurm", str(self.source)), "slurm")

    def data(self, profile: str) -> DataConfig:
        return data_config(self.params, profile)

    def section(self, profile: str, name: str) -> Any:
        """``<profile>.<name>`` of params.yaml."""
        return profile_section(self.params, profile, name, str(self.source))

    def recipe(self, profile: str, run: str | None) -> PretrainConfig:
        """The pretraining recipe of run ``run`` (None: the shared recipe, no drop path)."""
        own = section(self.params, f"{profile}.pretrain_runs.{run}", str(self.source)) if run else {"drop_path": 0.0}
        return recipe_of_run(self.section(profile, "pretrain"), self.section(profile, "pretrain_speed"), own, profile)


def load_study(params: str | Path = "params.yaml") -> Study:
    """The study of a params file: its stages in both profiles, parsed once."""
    data = load_params(params)
    peers, sweep, ablations = _peers(data), sweep_config(data), ablation_config(data)
    tables = load_paper_tables()
    profiles = [p for p in PROFILES if p in data]
    trained = {p: _trained(data, p, peers, sweep, ablations, tables) for p in profiles}
    producers = {s.outputs: s.name for stages in trained.values() for s in stages}
    stages = [stage for p in profiles for stage in _profile_stages(data, p, peers, tables, trained[p], producers)]
    return Study(data, Path(params), peers, sweep, ablations, stages, lanes_of(data))


# ---- the stages of one profile, as dvc.yaml declares them


def _classification_tables(tables: Mapping[str, PaperTable], key: str) -> tuple[str, ...]:
    """The tables with a row of pretraining run ``key`` (table 1 or 2 for a model, 6 for an ablation, 7 for clusters)."""
    return tuple(
        t.id for t in tables.values() if t.task in ("classification", "ablation", "clusters")
        and any(row.get("ours") and run_key(row["ours"], row.get("clusters"), row.get("variant")) == key for _, row in t.iter_rows())
    )


def _dense_tables(tables: Mapping[str, PaperTable], task: str, setting: Mapping[str, str]) -> tuple[str, ...]:
    """The tables with a section of this detection (detector, schedule) or segmentation (head) setting."""
    return tuple(
        t.id for t in tables.values() if t.task == task
        and any(all(setting.get(k) == v for k, v in s.setting.items() if k != "iters") for s in t.sections)
    )


#: What each entry of params.yaml's run lists names (dvc.yaml's stages read these keys).
RUN_KEYS = {
    "runs": ("profile", "model"),
    "detection_runs": ("profile", "model", "detector", "schedule", "weights"),
    "segmentation_runs": ("profile", "model", "head", "weights"),
}


def _runs_of(params: dict[str, Any], group: str, profile: str, lane: str = OURS) -> dict[str, dict[str, Any]]:
    """The entries of ``runs`` / ``detection_runs`` / ``segmentation_runs`` (``released.<group>`` in the released
    lane) that belong to ``profile``."""
    where = group if lane == OURS else f"released.{group}"
    entries = (params.get(group) or {}) if lane == OURS else section_of(params, group)
    if not isinstance(entries, dict):
        raise SecvitError(f"'{where}' in params.yaml must be a mapping of runs")
    for key, run in entries.items():
        missing = [k for k in RUN_KEYS[group] if not isinstance(run, dict) or k not in run]
        if missing:
            raise SecvitError(f"'{where}.{key}' in params.yaml needs {', '.join(missing)} (each entry names {', '.join(RUN_KEYS[group])})")
        if "weights" in run:
            named = released_model(str(run["weights"]))
            if lane == OURS and named:
                raise SecvitError(f"'{where}.{key}' runs from a released checkpoint ({run['weights']}): list it under released.{group} (the released lane)")
            if lane == RELEASED and named != run["model"]:
                raise SecvitError(f"'{where}.{key}.weights' must be released:{run['model']} (the run's own model), got {run['weights']!r}")
    return {key: run for key, run in entries.items() if run["profile"] == profile}


def _trained(params: dict[str, Any], profile: str, peers: Peers, sweep: SweepConfig, ablations: AblationConfig,
             tables: Mapping[str, PaperTable]) -> list[Stage]:
    """The pretraining stages of ``profile``: its runs (``runs``), the sweep's and the ablations'."""
    imagenet = (f"data-{profile}@imagenet",)
    trained = []
    for key, run in _runs_of(params, "runs", profile).items():
        model = run["model"]
        trained.append(Stage(f"pretrain@{key}", "pretrain", profile, (("model", model),), imagenet, model, model, PRETRAIN,
                             _classification_tables(tables, model), peers.of(model), OURS))
    for text in sweep.clusters:
        key = run_key(sweep.model, parse_clusters(text))
        trained.append(Stage(f"sweep@{profile}-{text}", "pretrain", profile, (("clusters", text),), imagenet, sweep.model, key,
                             PRETRAIN, _classification_tables(tables, key), lane=OURS))
    for variant in ablations.variants:
        key = run_key(ablations.model, None, variant)
        trained.append(Stage(f"ablate@{profile}-{variant}", "pretrain", profile, (("ablation", variant),), imagenet,
                             ablations.model, key, PRETRAIN, _classification_tables(tables, key), lane=OURS))
    return trained


def _released_stages(params: dict[str, Any], profile: str, tables: Mapping[str, PaperTable]) -> tuple[list[Stage], list[Stage]]:
    """The released lane's stand-ins (the smoke profile's generated checkpoints) and evaluations of ``profile``."""
    stand = stand_in(params)
    stand_ins = [Stage(f"released-smoke@{m}", "data", profile, (("released", m),), (), m, lane=RELEASED)
                 for m in (stand.models if stand and profile == "smoke" else ())]
    made = {stand.path(s.model): s.name for s in stand_ins} if stand else {}
    evaluated = []
    for key, entry in released_checkpoints(params).items():
        if entry.profile != profile:
            continue
        producer = made.get(Path(entry.file))
        evaluated.append(Stage(
            f"evaluate-released@{key}", "evaluate", profile, (("model", entry.model), ("checkpoint", f"{PREFIX}{entry.model}")),
            (*([producer] if producer else []), f"data-{profile}@imagenet"), entry.model, entry.model, lane_task(PRETRAIN, RELEASED),
            tuple(t for t in _classification_tables(tables, entry.model) if t == "table1"), lane=RELEASED))
    return stand_ins, evaluated


def _profile_stages(params: dict[str, Any], profile: str, peers: Peers, tables: Mapping[str, PaperTable], trained: list[Stage],
                    producers: Mapping[Path | None, str]) -> list[Stage]:
    """Every stage of ``profile``, upstream first; ``producers``: the pretraining stages (of any profile) by run folder."""
    data = [Stage(f"data-{profile}@{d}", "data", profile, (("dataset", d),)) for d in DATASETS]
    complexity = Stage(f"complexity@{profile}", "complexity", profile,
                       tables=tuple(t.id for t in tables.values() if t.task in ("classification", "ablation", "clusters", "architecture")))
    evaluated = [
        Stage(f"evaluate@{s.item}", "evaluate", profile, s.options, (s.name, f"data-{profile}@imagenet"), s.model, s.run, PRETRAIN,
              s.tables, s.peer, OURS)
        for s in trained if s.group == "pretrain"
    ]
    stand_ins, released = _released_stages(params, profile, tables)
    checked = {s.model: s.name for s in released}
    dense: list[Stage] = []
    for lane in LANES:
        for group, kind, task, dataset, setting_keys in (
            ("detection_runs", "detect", DETECTION, "coco", ("detector", "schedule")),
            ("segmentation_runs", "segment", SEGMENTATION, "ade20k", ("head",)),
        ):
            for key, run in _runs_of(params, group, profile, lane).items():
                model, weights = run["model"], str(run["weights"])
                setting = {k: str(run[k]) for k in setting_keys}
                producer = producers.get(Path(weights).parent) if lane == OURS else checked.get(model)
                if lane == RELEASED and producer is None:
                    raise SecvitError(f"'released.{group}.{key}' runs from {weights}, but released.checkpoints has no {profile}-{model}; add it")
                dense.append(Stage(f"{kind}{'' if lane == OURS else '-released'}@{key}", kind, profile,
                                   (("model", model), *setting.items(), ("weights", weights)),
                                   (f"data-{profile}@{dataset}", *([producer] if producer else [])), model,
                                   downstream_key(model, *setting.values()), lane_task(task, lane), _dense_tables(tables, task, setting),
                                   peers.of(model), lane))
    results = (complexity.name, *(s.name for s in [*trained, *evaluated, *released, *dense]))
    final = [
        Stage(f"tables@{profile}", "tables", profile, (), results),
        Stage(f"figures@{profile}", "figures", profile, (), (f"data-{profile}@imagenet", *(s.name for s in trained)), lane=OURS),
    ]
    return [*data, complexity, *stand_ins, *trained, *evaluated, *released, *dense, *final]
