"""The authors' released checkpoints: where each profile finds them, their check, and the smoke profile's stand-ins.

params.yaml ``released.checkpoints`` maps ``<profile>-<model>`` to the file as the user downloaded it
(``file``), optionally with its SHA-256 (``sha256``). Stages name a released checkpoint ``released:<model>``
(``secvit evaluate --checkpoint released:secvit_small``, ``secvit detect --weights released:secvit_small``):
:func:`released_file` finds the profile's file, refuses a missing one with where the authors publish it and
where to put it, and a file whose hash differs from the given one with both hashes. The file then loads like
every checkpoint: weights-only (:func:`secvit.checkpoint.load_file_checked`).

The smoke profile has no released files: :func:`write_stand_in` builds one from a seeded model, written in the
released state-dict layout (the names and shapes of the authors' files, the inverse of
:func:`secvit.models.secvit.checkpoint_filter_fn`), with ``model`` and ``model_ema`` weights as theirs, so the
smoke profile takes the same code paths as the paper's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError
from secvit.params import PROFILES, load_params
from secvit.runs import LANES

__all__ = [
    "PREFIX", "URLS", "ReleasedCheckpoint", "StandIn", "released_checkpoints", "released_file", "released_model",
    "lanes_of", "section_of", "sha256_of", "stand_in", "write_stand_in",
]

#: How stage options name a released checkpoint: ``released:<model>``.
PREFIX = "released:"
#: Where the authors publish each checkpoint (github.com/qhfan/SecViT, README).
URLS: dict[str, str] = {
    "secvit_tiny": "https://pan.baidu.com/s/1DLAnq0Q_6v50vbs3w8cbrQ?pwd=56ez",
    "secvit_small": "https://pan.baidu.com/s/1oMaCsXFjsawy3vllV7zmwg?pwd=ga8j",
    "secvit_base": "https://pan.baidu.com/s/19By5MEvs7ej_t4JlXrMhWQ?pwd=vgv9",
    "secvit_large": "https://pan.baidu.com/s/1J3cckabSXPD-XUd3XHR7Lw?pwd=558b",
}
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One entry of ``released.checkpoints``: a released file of ``model`` for ``profile``."""

    key: str
    profile: str
    model: str
    file: str
    sha256: str | None = None


@dataclass(frozen=True)
class StandIn:
    """``released.stand_in``: the smoke profile's generated stand-ins (``folder/<model>.pth``, from ``seed``)."""

    folder: str
    models: tuple[str, ...]
    seed: int = 0

    def path(self, model: str) -> Path:
        return Path(self.folder) / f"{model}.pth"


def released_model(spec: str | Path | None) -> str | None:
    """``secvit_small`` for ``released:secvit_small``; None for a path (or None)."""
    if spec is None or not str(spec).startswith(PREFIX):
        return None
    model = str(spec)[len(PREFIX):]
    if not model:
        raise SecvitError(f"{spec!r} names no model; write released:<model>, e.g. released:secvit_small")
    return model


def _released(params: dict[str, Any]) -> dict[str, Any]:
    found = params.get("released") or {}
    if not isinstance(found, dict):
        raise SecvitError("'released' in params.yaml must be a mapping (lanes, stand_in, checkpoints, detection_runs, segmentation_runs)")
    return found


def released_checkpoints(params: dict[str, Any]) -> dict[str, ReleasedCheckpoint]:
    """``released.checkpoints`` of a params file's contents, checked: ``<profile>-<model>`` -> entry."""
    entries = _released(params).get("checkpoints") or {}
    if not isinstance(entries, dict):
        raise SecvitError("'released.checkpoints' in params.yaml must map <profile>-<model> to {profile, model, file, sha256}")
    found = {}
    for key, entry in entries.items():
        where = f"released.checkpoints.{key}"
        missing = [k for k in ("profile", "model", "file") if not isinstance(entry, dict) or not entry.get(k)]
        if missing:
            raise SecvitError(f"'{where}' in params.yaml needs {', '.join(missing)} (each entry names profile, model, file and optionally sha256)")
        if entry["profile"] not in PROFILES:
            raise SecvitError(f"'{where}.profile': unknown profile {entry['profile']!r}; choose one of: {', '.join(PROFILES)}")
        if key != f"{entry['profile']}-{entry['model']}":
            raise SecvitError(f"'{where}' must be keyed {entry['profile']}-{entry['model']} (<profile>-<model>)")
        sha = entry.get("sha256")
        if sha is not None and not _HEX.fullmatch(str(sha).lower()):
            raise SecvitError(f"'{where}.sha256' must be 64 hex digits (`sha256sum {entry['file']}`) or null, got {sha!r}")
        found[key] = ReleasedCheckpoint(key, entry["profile"], entry["model"], str(entry["file"]), None if sha is None else str(sha).lower())
    return found


def stand_in(params: dict[str, Any]) -> StandIn | None:
    """``released.stand_in`` (the smoke profile's generated checkpoints), None when absent."""
    data = _released(params).get("stand_in")
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("folder"), str) or not isinstance(data.get("models"), list):
        raise SecvitError("'released.stand_in' in params.yaml needs folder (a path) and models (a list), e.g. {folder: data/smoke/released, models: [secvit_tiny], seed: 0}")
    return StandIn(data["folder"], tuple(data["models"]), int(data.get("seed", 0)))


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for piece in iter(lambda: f.read(1 << 24), b""):
            digest.update(piece)
    return digest.hexdigest()


def released_file(params: str | Path | dict[str, Any], profile: str, model: str) -> tuple[Path, str]:
    """The profile's released checkpoint of ``model`` and its SHA-256, checked (see the module docstring)."""
    data = params if isinstance(params, dict) else load_params(params)
    entry = released_checkpoints(data).get(f"{profile}-{model}")
    if entry is None:
        raise SecvitError(
            f"no released checkpoint of {model} for the {profile} profile; add released.checkpoints.{profile}-{model}: "
            f"{{profile: {profile}, model: {model}, file: <the downloaded file>}} to params.yaml"
        )
    path = Path(entry.file)
    if not path.is_file():
        if profile == "smoke":
            where = "it is generated by `secvit data --profile smoke --released " + model + "` (stage released-smoke@" + model + ")"
        elif model in URLS:
            where = f"the authors publish it at {URLS[model]} (github.com/qhfan/SecViT); download it to {path} or set released.checkpoints.{entry.key}.file"
        else:
            where = f"the authors publish no {model} checkpoint; remove released.checkpoints.{entry.key}"
        raise SecvitError(f"released checkpoint {path} of {model} does not exist: {where}")
    actual = sha256_of(path)
    if entry.sha256 is not None and actual != entry.sha256:
        raise SecvitError(
            f"released checkpoint {path} has SHA-256 {actual}, but released.checkpoints.{entry.key}.sha256 is {entry.sha256}: "
            "download the file again, or correct the hash"
        )
    return path, actual


def write_stand_in(model_name: str, path: str | Path, classes: int, seed: int = 0) -> Path:
    """A released-layout checkpoint of ``model_name`` (``model`` and ``model_ema``, two seeded initialisations) with
    ``classes`` outputs, checked to load through the model's checkpoint filter, written atomically."""
    import torch  # heavy: only the stand-in writer needs torch

    from secvit.checkpoint import atomic_save
    from secvit.models.registry import create
    from secvit.models.secvit import SecViT, checkpoint_filter_fn, to_released_layout

    weights = []
    for offset in (0, 1):
        torch.manual_seed(seed + offset)
        net = create(model_name, num_classes=classes)
        if not isinstance(net, SecViT):
            raise SecvitError(f"the authors released SecViT checkpoints only; {model_name} has no released layout (choose one of: {', '.join(URLS)})")
        state = to_released_layout(net)
        net.load_state_dict(checkpoint_filter_fn(state, net))  # the layout loads back, strictly
        weights.append(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": weights[0], "model_ema": weights[1]}, path)
    return path


def lanes_of(params: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """``released.lanes``: the lanes each profile runs (default both)."""
    given = _released(params).get("lanes") or {}
    found = {}
    for profile in PROFILES:
        value = given.get(profile, list(LANES)) if isinstance(given, dict) else None
        if not isinstance(value, list) or not value or any(v not in LANES for v in value):
            raise SecvitError(f"setting 'released.lanes.{profile}' must be a list of {' and/or '.join(LANES)}, got {value!r}")
        found[profile] = tuple(v for v in LANES if v in value)
    return found


def section_of(params: dict[str, Any], name: str) -> dict[str, Any]:
    """``released.<name>`` (``detection_runs``, ``segmentation_runs``): a mapping, empty when absent."""
    value = _released(params).get(name) or {}
    if not isinstance(value, dict):
        raise SecvitError(f"'released.{name}' in params.yaml must be a mapping of runs")
    return value
