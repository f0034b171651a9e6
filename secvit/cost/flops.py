"""FLOPs and parameters of the models the stages run: fvcore counts of our models at image sizes, measured once
and cached (:class:`Flops`), and whole detectors and segmentors as the paper prints them (tables 3-5) or, where
it does not, our backbone plus the setting's non-backbone share of the paper's SecViT-S row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import secvit.models
from secvit.atomic import write_text
from secvit.complexity import measure
from secvit.tables.paper import paper_value

__all__ = ["FLOPS_CACHE", "Flops", "dense_gflops", "dense_params"]

#: Where measured FLOPs are cached (keyed by model, options, size and the models' source).
FLOPS_CACHE = Path("runs/bench/flops.json")


def _models_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(secvit.models.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Flops:
    """GFLOPs (all ops) and parameters of models at image sizes, measured with fvcore once and
    cached in ``runs/bench/flops.json`` (entries of other model code are not reused)."""

    def __init__(self, cache: Path | None = FLOPS_CACHE) -> None:
        self.cache = cache
        self.digest = _models_digest()
        self.entries: dict[str, list[float]] = {}
        if cache is not None and cache.is_file():
            try:
                self.entries = json.loads(cache.read_text()).get(self.digest, {})
            except ValueError:
                self.entries = {}
        self.dirty = False

    def __call__(self, model: str, size: int, options: dict[str, Any] | None = None) -> tuple[float, int]:
        key = f"{model}|{json.dumps(options or {}, sort_keys=True)}|{size}"
        if key not in self.entries:
            result = measure(model, size, **(options or {}))
            self.entries[key] = [result.gflops, result.params]
            self.dirty = True
        gflops, params = self.entries[key]
        return gflops, int(params)

    def cached(self, key: str, compute: Callable[[], float]) -> float:
        """A figure under ``key`` (e.g. a detector head's GFLOPs per RoI), computed once."""
        if key not in self.entries:
            self.entries[key] = [compute()]
            self.dirty = True
        return self.entries[key][0]

    def save(self) -> None:
        """Write new entries (atomically: two measurements side by side may save at once)."""
        if self.cache is not None and self.dirty:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.cache, json.dumps({self.digest: self.entries}, indent=0, sort_keys=True))
            self.dirty = False


# ---- whole detectors and segmentors


def _dense_row(table: str, setting: dict[str, str], model: str, column: str, backbone: float, small_backbone: float,
               head_scale: float = 1.0) -> float:
    """A detector's or segmentor's figure (``gflops`` or ``params_m``): the paper's printed figure for our
    model in this setting, else ``backbone`` plus the setting's non-backbone share of the paper's SecViT-S
    row (its printed figure less ``small_backbone``), times ``head_scale``."""
    try:
        printed = paper_value(table, model, column, setting)
    except ValueError:
        printed = None
    if printed is not None:
        return float(printed)
    head = float(paper_value(table, "secvit_small", column, setting)) - small_backbone
    return backbone + max(head, 0.0) * head_scale


def dense_gflops(table: str, setting: dict[str, str], model: str, ref: tuple[int, int], row_ref: tuple[int, int], flops: Flops) -> float:
    """Whole-model GFLOPs of a detector or segmentor at ``ref``: printed, else the backbone scaled from 224x224
    plus the head share of SecViT-S's row (printed at ``row_ref``), scaled to ``ref``."""
    area, row_area = ref[0] * ref[1], row_ref[0] * row_ref[1]
    return _dense_row(table, setting, model, "gflops", flops(model, 224)[0] * area / 224**2,
                      flops("secvit_small", 224)[0] * row_area / 224**2, area / row_area)


def dense_params(table: str, setting: dict[str, str], model: str, flops: Flops) -> float:
    """Whole-model parameters of a detector or segmentor (printed, else the backbone's plus SecViT-S's head share)."""
    return 1e6 * _dense_row(table, setting, model, "params_m", flops(model, 224)[1] / 1e6, flops("secvit_small", 224)[1] / 1e6)
