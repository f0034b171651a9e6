"""Stage: make the smoke datasets (smoke profile), check a dataset's layout, verify its images, write its manifest.

DVC tracks the small manifest (file list digest, sizes, counts, the bad images) instead of
hashing a million images; downstream stages depend on the manifest. Every image and mask is
decoded here, on CPUs, before any training stage starts (:mod:`secvit.data.verify`); the result
is cached beside the manifest (``<dataset>.checked.json``: by file size and mtime), so a re-run
decodes only what changed. A bad file stops nothing: it is listed with its fix, and the loaders
of every later stage leave it out (:func:`secvit.data.inputs.stage_data`).
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from secvit.atomic import write_json
from secvit.data import layout, manifest, synthetic, verify
from secvit.data.inputs import data_settings, existing_root, expected_key, verified_path
from secvit.errors import SecvitError
from secvit.params import load_params
from secvit.released import stand_in, write_stand_in


def prepare(profile: str, params: Path, dataset: str, workers: int | None = None) -> tuple[Path, dict[str, str]]:
    """Generate (if the profile says so), check, verify and write the manifest of one dataset.

    Returns the manifest's path and the bad images (path relative to the root -> problem, with its fix).
    """
    cfg = data_settings(profile, params, dataset)
    root = cfg.root(dataset)
    generate = (cfg.generate or {}).get(dataset)
    if generate is not None:
        synthetic.generate(dataset, root, generate, hint=f"set {profile}.data.{dataset} in {params} to another folder")
    root = existing_root(cfg, profile, params, dataset)
    scanned = layout.scan(dataset, root, cfg.expected_for(dataset), expected_key(profile, params, dataset))
    cache = verified_path(cfg, dataset)
    with Progress(
        TextColumn(f"verify {dataset}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
        disable=len(scanned.units) < verify.INLINE,
    ) as progress:
        task = progress.add_task("verify", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = verify.verify(root, dataset, scanned, manifest.read_cache(cache), workers or len(os.sched_getaffinity(0)), advance)
    out = cfg.manifest(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(cache, {**result.cache, "root": str(root)})  # where it was verified: stages refuse another root
    manifest.write_manifest(root, dataset, scanned.counts, out, listing=result.listing, bad=result.bad)
    return out, {rel: f"{problem}; {verify.fix(dataset)}" for rel, problem in result.bad.items()}


def stand_in_stage(profile: str, params: Path, model: str) -> Path:
    """The smoke profile's stand-in for ``model``'s released checkpoint (params.yaml ``released.stand_in``): a seeded
    model in the released layout with as many classes as the profile's generated ImageNet. Returns its path."""
    data = load_params(params)
    stand = stand_in(data)
    generated = (data_settings(profile, params, "imagenet").generate or {}).get("imagenet")
    if stand is None or generated is None:
        raise SecvitError(f"the {profile} profile generates no data: it reads the released checkpoints as downloaded (released.checkpoints)")
    if model not in stand.models:
        raise SecvitError(f"{model} is not in released.stand_in.models ({', '.join(stand.models) or 'none'}); add it there")
    return write_stand_in(model, stand.path(model), int(generated["num_classes"]), stand.seed)
