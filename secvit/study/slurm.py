"""The SLURM settings of each stage's job: params.yaml ``slurm``, layered per stage kind, profile and run.

No dvc.yaml stage declares this section, so editing it never invalidates results. The cost plan
(:mod:`secvit.cost`) reads the same settings as the executor (``orchestrate/slurm.py``) submits with.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from secvit.errors import SecvitError
from secvit.params import PROFILES, from_section

if TYPE_CHECKING:
    from secvit.study import Stage

#: What a stage runs: the kinds of the SLURM settings (``slurm.stages.<kind>``) and of the cost plan.
KINDS = ("data", "complexity", "pretrain", "evaluate", "detect", "segment", "tables", "figures")

#: The kinds whose jobs train or measure on GPUs in a GPU profile (``paper``): they need ``gpus_per_node``.
GPU_KINDS = ("complexity", "pretrain", "evaluate", "detect", "segment")

#: Bytes of one checkpoint of the biggest model of each kind that writes them (weights and AdamW's two moments, float32;
#: pretraining also its EMA copy), measured by ``python -m secvit.bench.checkpoint`` (slurm/README.md). A job's stop
#: warning (``signal_delay_s``) must leave time for a step and this write.
CHECKPOINT_BYTES = {"pretrain": 1.54e9, "detect": 1.38e9, "segment": 1.56e9}

# settings that only the whole section sets (not per profile, stage kind or run)
GLOBAL_SETTINGS = frozenset({"folder", "poll_s", "stages", "runs", "profiles"})


@dataclass
class SlurmConfig:
    """The ``slurm:`` section of params.yaml. The settings of one stage's job: these, then
    ``stages[kind]``, then ``profiles[profile]`` (which may hold ``stages`` and ``runs`` of its
    own), then ``runs[run]`` (:meth:`for_stage`). Parsed once per study: :attr:`secvit.study.Study.slurm`."""

    partition: str | None
    account: str | None
    qos: str | None
    nodes: int
    gpus_per_node: int
    tasks_per_node: int | None  # None: one task (DDP process) per GPU, one task if no GPUs
    cpus_per_task: int
    mem_gb: float | None  # None: the partition's default
    timeout_min: int
    signal_delay_s: int
    max_requeues: int  # time-outs a job may be requeued after (submitit's max_num_timeout)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    folder: str = "runs/slurm"
    poll_s: float = 60.0
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        minimum = {"nodes": 1, "gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 1, "signal_delay_s": 0, "max_requeues": 0, "poll_s": 0.1}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise SecvitError(f"setting '{where}.{name}' must be at least {low:g}, got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb < 0.1:
            raise SecvitError(f"setting '{where}.mem_gb' must be at least 0.1 or null, got {self.mem_gb}")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise SecvitError(f"setting '{where}.tasks_per_node' must be at least 1 or null, got {self.tasks_per_node}")
        unknown = sorted(set(self.stages) - set(KINDS))
        if unknown:
            raise SecvitError(f"unknown stage kind '{where}.stages.{unknown[0]}'; valid kinds: {', '.join(KINDS)}")
        unknown = sorted(set(self.profiles) - set(PROFILES))
        if unknown:
            raise SecvitError(f"unknown profile '{where}.profiles.{unknown[0]}'; profiles: {', '.join(PROFILES)}")
        for kind in self.stages:
            self._layer({}, f"{where}.stages.{kind}", self.stages[kind])  # an error now, not at submission
        for run in self.runs:
            self._layer({}, f"{where}.runs.{run}", self.runs[run])
        for profile, layer in self.profiles.items():
            self._layer({}, f"{where}.profiles.{profile}", layer, nested=True)
            for kind, settings in ((layer or {}).get("stages") or {}).items():
                if kind not in KINDS:
                    raise SecvitError(f"unknown stage kind '{where}.profiles.{profile}.stages.{kind}'; valid kinds: {', '.join(KINDS)}")
                self._layer({}, f"{where}.profiles.{profile}.stages.{kind}", settings)
            for run, settings in ((layer or {}).get("runs") or {}).items():
                self._layer({}, f"{where}.profiles.{profile}.runs.{run}", settings)
        if self.stages or self.runs or self.profiles:  # every combination merges into valid settings
            for profile in [None, *self.profiles]:
                for kind in KINDS:
                    self.for_job(kind, profile)

    def _layer(self, merged: dict[str, Any], where: str, layer: Any, nested: bool = False) -> dict[str, Any]:
        """``merged`` with the settings of ``layer`` on top (``stages``/``runs`` of a profile kept apart)."""
        if layer is None:
            return merged
        if not isinstance(layer, dict):
            raise SecvitError(f"{where} must be a mapping of settings")
        fixed = sorted((GLOBAL_SETTINGS - ({"stages", "runs"} if nested else set())) & set(layer))
        if fixed:
            raise SecvitError(f"'{where}.{fixed[0]}' can only be set for all jobs (in slurm: itself)")
        unknown = sorted(set(layer) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SecvitError(f"unknown setting '{where}.{unknown[0]}'")
        own = {k: v for k, v in layer.items() if k not in ("stages", "runs")}
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("stages", "runs", "profiles")}
        from_section(SlurmConfig, base | own, where)  # each value type- and range-checked where it is written
        return merged | own

    def for_job(self, kind: str, profile: str | None = None, keys: Sequence[str] = (), job: str | None = None) -> SlurmConfig:
        """The settings of a job of stage kind ``kind`` in ``profile``; ``keys`` name its run in ``runs``
        (least specific first: :attr:`secvit.study.Stage.slurm_keys`); ``job`` names it in messages."""
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("stages", "runs", "profiles")}
        merged = self._layer(merged, f"slurm.stages.{kind}", self.stages.get(kind))
        layer = self.profiles.get(profile) or {} if profile else {}
        merged = self._layer(merged, f"slurm.profiles.{profile}", layer, nested=True)
        merged = self._layer(merged, f"slurm.profiles.{profile}.stages.{kind}", (layer.get("stages") or {}).get(kind))
        for where, runs in (("slurm.runs", self.runs), (f"slurm.profiles.{profile}.runs", layer.get("runs") or {})):
            for key in keys:
                merged = self._layer(merged, f"{where}.{key}", runs.get(key))
        return from_section(SlurmConfig, merged | {"stages": {}, "runs": {}, "profiles": {}}, f"slurm (job of {job or kind})")

    def source(self, name: str, kind: str, profile: str | None = None, keys: Sequence[str] = ()) -> str:
        """Where the value of setting ``name`` for a job of ``kind`` comes from: the most specific layer that sets it
        (``slurm.profiles.paper.stages.pretrain.gpus_per_node``), else ``slurm.<name>`` (what to edit to change it)."""
        layer = (self.profiles.get(profile) or {}) if profile else {}
        found = f"slurm.{name}"
        layers = [(f"slurm.stages.{kind}", self.stages.get(kind)), (f"slurm.profiles.{profile}", layer),
                  (f"slurm.profiles.{profile}.stages.{kind}", (layer.get("stages") or {}).get(kind))]
        for where, runs in (("slurm.runs", self.runs), (f"slurm.profiles.{profile}.runs", layer.get("runs") or {})):
            layers += [(f"{where}.{key}", runs.get(key)) for key in keys]
        for where, settings in layers:
            if isinstance(settings, dict) and name in settings:
                found = f"{where}.{name}"
        return found

    def describe(self) -> str:
        """The job's resources in one line (``secvit plan``, ``secvit doctor``)."""
        gpus = f" x {self.gpus_per_node} GPUs" if self.gpus_per_node else ", no GPU"
        mem = f"{self.mem_gb:g} GB" if self.mem_gb is not None else "default memory"
        return (f"partition {self.partition or '(default)'}, {self.nodes} node(s){gpus}, {self.ntasks_per_node()} task(s)/node x "
                f"{self.cpus_per_task} CPUs, {mem}, {self.timeout_min} min, stop warning {self.signal_delay_s} s before")

    def for_stage(self, stage: Stage) -> SlurmConfig:
        """The settings of the job that runs ``stage``: its kind's, its profile's, its run's (``runs`` keys
        match the run key, the stage's item or its name: ``secvit_large``, ``paper-secvit_large``,
        ``pretrain@paper-secvit_large``)."""
        return self.for_job(stage.kind, stage.profile, stage.slurm_keys, stage.name)

    def ntasks_per_node(self) -> int:
        """``tasks_per_node`` if set, else one task per GPU, one task on CPU-only jobs. Several tasks
        make one DDP run (gloo on CPU); one task with several GPUs launches a process per GPU itself."""
        return self.tasks_per_node or self.gpus_per_node or 1


def cluster_partitions() -> set[str] | None:
    """The partitions ``sinfo`` lists here, None where there is no SLURM (or no answer)."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    try:
        out = subprocess.run([sinfo, "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    return {line.strip().rstrip("*") for line in out.stdout.splitlines() if line.strip()} if out.returncode == 0 else None


def job_problem(config: SlurmConfig, settings: SlurmConfig, kind: str, profile: str | None, keys: Sequence[str], job: str,
                gpu: bool, partitions: set[str] | None, checkpoint_gb_per_s: float) -> str | None:
    """Why the job ``job`` (a stage of ``kind``, resolved ``settings`` from ``config``) must not be submitted, in one line that
    names the setting to change; None if nothing is wrong. ``gpu``: the profile trains on GPUs; ``partitions``: the
    cluster's (:func:`cluster_partitions`; None: unknown); ``checkpoint_gb_per_s``: the write rate of a checkpoint."""
    where = lambda name: config.source(name, kind, profile, keys)  # noqa: E731
    if gpu and kind in GPU_KINDS and not settings.gpus_per_node:
        return f"{job} would get no GPU: set {where('gpus_per_node')} (the GPUs of a node)"
    if partitions is not None and settings.partition is not None and settings.partition not in partitions:
        return (f"{job}: partition {settings.partition!r} does not exist here (sinfo lists {', '.join(sorted(partitions)) or 'none'}): "
                f"set {where('partition')}")
    save_s = CHECKPOINT_BYTES.get(kind, 0.0) / 1e9 / checkpoint_gb_per_s
    if settings.signal_delay_s < save_s:
        return (f"{job}: the stop warning {settings.signal_delay_s} s before the time limit is shorter than a checkpoint's write "
                f"(~{save_s:.0f} s): raise {where('signal_delay_s')}")
    if settings.timeout_min * 60 <= settings.signal_delay_s + save_s:
        return (f"{job}: the time limit ({settings.timeout_min} min) is not longer than the stop warning ({settings.signal_delay_s} s) "
                f"plus a checkpoint's write (~{save_s:.0f} s), so no step would ever be saved: raise {where('timeout_min')}")
    return None


def kind_settings(study: Any, profile: str, gpu: bool, partitions: set[str] | None, checkpoint_gb_per_s: float) -> list[tuple[str, SlurmConfig, str | None]]:
    """Per stage kind of ``profile``'s stages: the settings its jobs resolve to (runs may override them) and what
    :func:`job_problem` finds wrong with them. What ``secvit plan`` and ``secvit doctor`` show."""
    kinds = [k for k in KINDS if any(s.kind == k for s in study.of(profile))]
    found = []
    for kind in kinds:
        settings = study.slurm.for_job(kind, profile)
        found.append((kind, settings, job_problem(study.slurm, settings, kind, profile, (), f"{kind} jobs", gpu, partitions, checkpoint_gb_per_s)))
    return found
