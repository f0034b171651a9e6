"""The architecture studies of params.yaml, shared by both profiles: the table-7 sweep over the
number of clusters per stage (``sweep``) and the table-6 ablations (``ablations``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from secvit.errors import SecvitError
from secvit.models.variants import ABLATIONS, VARIANTS
from secvit.params import from_section, load_params, section
from secvit.runs import run_key


@dataclass
class SweepConfig:
    model: str
    clusters: list[str]  # e.g. "64-16-4-1": clusters of stages 1-4 (1 = global attention)

    def parsed(self) -> list[tuple[int, ...]]:
        return [parse_clusters(c) for c in self.clusters]

    def validate(self, where: str) -> None:
        for text, clusters in zip(self.clusters, self.parsed()):
            if run_key(self.model, clusters) == self.model:  # dvc.yaml names sweep runs <model>-c<clusters>
                raise SecvitError(
                    f"'{where}.clusters': {text} is {self.model}'s own setting, trained by its plain run "
                    f"(pretrain@<profile>-{self.model}); remove it from the sweep"
                )


def parse_clusters(text: str) -> tuple[int, ...]:
    """``"64-16-4-1"`` -> (64, 16, 4, 1), with a one-line error for anything else."""
    try:
        values = tuple(int(v) for v in str(text).split("-"))
    except ValueError:
        values = ()
    if len(values) != 4 or any(v < 1 for v in values):
        raise SecvitError(f"clusters must be four positive integers like 64-16-4-1, got {text!r}")
    return values


def sweep_config(params_path: str | Path) -> SweepConfig:
    """The top-level ``sweep`` section, shared by both profiles."""
    return from_section(SweepConfig, section(load_params(params_path), "sweep"), "sweep")


@dataclass
class AblationConfig:
    model: str  # a SecViT variant; the paper ablates secvit_tiny
    variants: list[str]  # keys of secvit.models.variants.ABLATIONS

    def validate(self, where: str) -> None:
        if self.model not in VARIANTS:
            raise SecvitError(f"'{where}.model': the ablations are options of the SecViT family; choose one of: {', '.join(VARIANTS)}")
        for name in self.variants:
            if name not in ABLATIONS:
                raise SecvitError(f"'{where}.variants': unknown ablation {name!r}; choose from: {', '.join(ABLATIONS)}")


def ablation_config(params_path: str | Path) -> AblationConfig:
    """The top-level ``ablations`` section (table 6), shared by both profiles."""
    return from_section(AblationConfig, section(load_params(params_path), "ablations"), "ablations")
