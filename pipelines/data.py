"""Stage: make the smoke datasets (smoke profile), check a dataset's layout and write its manifest.

DVC tracks the small manifest (file list digest, sizes, counts) instead of hashing a
million images; downstream stages depend on the manifest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from secvit.pipelines.settings import DATASETS, data_config
from secvit.data import layout, manifest, synthetic
from secvit.errors import SecvitError

CHECKS = {"imagenet": layout.check_imagenet, "coco": layout.check_coco, "ade20k": layout.check_ade20k}
GENERATORS = {"imagenet": synthetic.make_imagenet, "coco": synthetic.make_coco, "ade20k": synthetic.make_ade20k}


def prepare(profile: str, params: Path, dataset: str) -> Path:
    """Generate (if the profile says so), check and write the manifest of one dataset."""
    if dataset not in DATASETS:
        raise SecvitError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    cfg = data_config(params, profile)
    root = cfg.root(dataset)
    generate = (cfg.generate or {}).get(dataset)
    if generate is not None:
        if root.exists():
            shutil.rmtree(root)
        GENERATORS[dataset](root, **{k: tuple(v) if isinstance(v, list) else v for k, v in generate.items()})
    counts = CHECKS[dataset](root, expected=cfg.expected_for(dataset))
    out = cfg.manifest(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_manifest(root, dataset, counts, out)
    return out
