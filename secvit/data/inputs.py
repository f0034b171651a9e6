"""How a stage finds the datasets of a profile: the layout checks, whose messages name the params.yaml keys
to set, and (for a stage that trains or evaluates) the bad images the data stage found, to leave out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from secvit.data import layout, manifest
from secvit.errors import SecvitError
from secvit.data.config import DATASETS, DataConfig, data_config

CHECKS = {"imagenet": layout.check_imagenet, "coco": layout.check_coco, "ade20k": layout.check_ade20k}
LABELS = {"imagenet": "ImageNet", "coco": "COCO", "ade20k": "ADE20K"}
HOLDS = {
    "imagenet": "holds train/ and val/ (or Kaggle's ILSVRC/)",
    "coco": "holds train2017/, val2017/ and annotations/",
    "ade20k": f"holds {layout.ADE_DIR}/",
}


def data_settings(profile: str, params: Path, dataset: str) -> DataConfig:
    if dataset not in DATASETS:
        raise SecvitError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    return data_config(params, profile)


def existing_root(cfg: DataConfig, profile: str, params: Path, dataset: str) -> Path:
    """The configured root, or a one-line error naming the setting when it does not exist."""
    root = cfg.root(dataset)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise SecvitError(f"{LABELS[dataset]} root {root} {state}; set {profile}.data.{dataset} in {params} to the folder that {HOLDS[dataset]}")
    return root


def expected_key(profile: str, params: Path, dataset: str) -> str:
    return f"{profile}.data.expected.{dataset} in {params}"


def check(profile: str, params: Path, dataset: str) -> layout.DatasetCounts:
    """The layout check of one dataset as configured (messages name the params keys to set)."""
    cfg = data_settings(profile, params, dataset)
    root = existing_root(cfg, profile, params, dataset)
    return CHECKS[dataset](root, cfg.expected_for(dataset), expected_key(profile, params, dataset))


@dataclass
class StageData:
    """A dataset as a training or evaluation stage reads it: checked, and its bad images to leave out."""

    root: Path
    counts: layout.DatasetCounts
    bad: dict[str, str]  # path relative to root -> problem

    def bad_paths(self) -> list[str]:
        """The bad images as paths below the root as configured (the loaders' own form)."""
        return [os.path.join(self.root, rel) for rel in self.bad]


def stage_data(profile: str, params: Path, dataset: str) -> StageData:
    """Check one dataset for a stage that trains or evaluates on it, with the bad images its manifest lists.

    Real data (a dataset the profile does not generate) must have been verified by the data stage
    (``secvit data``) where it lies now: without its manifest, or with a verification of another root
    (the cache beside the manifest records the root it checked), this is a one-line error, so no GPU
    time is spent on data that a check could have found bad. The manifest itself holds no path: it is the
    dataset's identity (files and sizes), so a moved dataset that the data stage verified again leaves
    every result current. Generated data without a manifest has nothing left out.
    """
    cfg = data_settings(profile, params, dataset)
    root = existing_root(cfg, profile, params, dataset)
    counts = CHECKS[dataset](root, cfg.expected_for(dataset), expected_key(profile, params, dataset))
    path = cfg.manifest(dataset)
    run_data = f"run `secvit data --profile {profile} --dataset {dataset}` first (CPU only; it decodes every image once)"
    if not path.is_file():
        if cfg.generate and dataset in cfg.generate:
            return StageData(root, counts, {})
        raise SecvitError(f"{LABELS[dataset]} at {root} has not been verified ({path} is missing); {run_data}")
    data = manifest.read_manifest(path)
    checked = (manifest.read_cache(verified_path(cfg, dataset)) or {}).get("root")
    if checked != str(root):
        where = f"it was verified at {checked}" if checked else f"{verified_path(cfg, dataset)} is missing"
        raise SecvitError(f"{LABELS[dataset]} at {root} has not been verified there ({where}); {run_data}")
    return StageData(root, counts, dict(data["bad"]))


def verified_path(cfg: DataConfig, dataset: str) -> Path:
    """The data stage's verification cache beside the manifest (git-ignored, no stage tracks it: it holds
    mtimes and the root it verified)."""
    return cfg.manifest(dataset).with_suffix(".checked.json")
