"""Where a profile's datasets are (``<profile>.data`` of params.yaml): their roots, the counts the real
datasets must have, and how the smoke profile generates its tiny ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError
from secvit.params import load_section

DATASETS = ("imagenet", "coco", "ade20k")


@dataclass
class DataConfig:
    """Where the datasets are, what counts to expect, and (smoke) how to generate them."""

    imagenet: str
    coco: str
    ade20k: str
    expected: dict[str, dict[str, int] | None] | None  # exact counts of the real datasets (null: no check)
    generate: dict[str, dict[str, Any]] | None  # generator arguments (smoke profile)
    manifests: str  # directory of the manifests that downstream stages depend on

    def root(self, dataset: str) -> Path:
        return Path(getattr(self, dataset))

    def expected_for(self, dataset: str) -> dict[str, int] | None:
        return (self.expected or {}).get(dataset)

    def manifest(self, dataset: str) -> Path:
        return Path(self.manifests) / f"{dataset}.json"

    def images(self, dataset: str, split: str) -> int:
        """Images of a split (``train`` or ``val``): the real dataset's expected count, or what the smoke
        profile generates (ADE20K names its splits training and validation)."""
        expected = self.expected_for(dataset)
        if expected:
            return int(expected[{"train": "training", "val": "validation"}[split] if dataset == "ade20k" else split])
        generated = (self.generate or {}).get(dataset)
        if not generated:
            raise SecvitError(f"cannot count the {dataset} images: neither data.expected nor data.generate names it")
        if dataset == "imagenet":
            return int(generated["num_classes"] * generated[f"{split}_per_class"])
        return int(generated[f"{split}_images"])


def data_config(params: str | Path | dict[str, Any], profile: str) -> DataConfig:
    """``<profile>.data`` of a params file (or of its contents)."""
    return load_section(params, profile, "data", DataConfig)
