"""Typed access to the profile sections of params.yaml shared by several stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secvit.params import from_section, load_params, profile_section

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
