"""Typed access to the profile sections of params.yaml shared by several stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secvit.params import from_section, load_params, profile_section, section

DATASETS = ("imagenet", "coco", "ade20k")


@dataclass
class DataConfig:
    """Where the datasets are, what counts to expect, and (smoke) how to generate them."""

    imagenet: str
    coco: str
    ade20k: str
    expected: dict[str, dict[str, int]] | None  # exact counts of the real datasets
    generate: dict[str, dict[str, Any]] | None  # generator arguments (smoke profile)
    manifests: str  # directory of the manifests that downstream stages depend on

    def root(self, dataset: str) -> Path:
        return Path(getattr(self, dataset))

    def expected_for(self, dataset: str) -> dict[str, int] | None:
        return (self.expected or {}).get(dataset)

    def manifest(self, dataset: str) -> Path:
        return Path(self.manifests) / f"{dataset}.json"


def load(params_path: str | Path, profile: str, name: str, cls: type):
    """``cls`` built from ``<profile>.<name>`` of the params file."""
    params = load_params(params_path)
    return from_section(cls, profile_section(params, profile, name), f"{profile}.{name}")


def data_config(params_path: str | Path, profile: str) -> DataConfig:
    return load(params_path, profile, "data", DataConfig)


def pretrain_config(params_path: str | Path, profile: str, run: str | None):
    """The pretraining recipe of run ``run`` (a run key: ``secvit_tiny``, ``secvit_tiny-no_lce``), from
    ``<profile>.pretrain``, ``<profile>.pretrain_speed`` and ``<profile>.pretrain_runs.<run>``; with
    ``run`` None (evaluation of any checkpoint), the shared recipe with no drop path."""
    from secvit.engine.config import recipe_of_run

    params = load_params(params_path)
    shared = profile_section(params, profile, "pretrain")
    speed = profile_section(params, profile, "pretrain_speed")
    own = section(params, f"{profile}.pretrain_runs.{run}", str(params_path)) if run else {"drop_path": 0.0}
    return recipe_of_run(shared, speed, own, profile)
