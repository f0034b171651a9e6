"""The SecViT variant table as plain data: widths, depths, heads, drop path, layer scale, clusters;
and :class:`Variant`, the one type of the variant tables of SecViT, STViT and PaCa-ViT.

The model file (:mod:`secvit.models.secvit`) builds the networks from it, and the tables
(:mod:`secvit.tables.results`) read the implemented names and default cluster settings
from it. This module itself imports neither torch nor timm (importing the ``secvit``
package still does: it registers the models with timm).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from secvit.errors import SecvitError

__all__ = ["ABLATIONS", "VARIANTS", "Variant", "ablation_options", "default_clusters"]


@dataclass(frozen=True)
class Variant:
    """Architecture of one size of a four-stage family: constructor arguments of its model class.

    A field left at its default here (no layer scale, ``clusters=None``) leaves the class's own default.
    """

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    drop_path_rate: float
    layer_scale_stages: tuple[int, ...] = ()
    clusters: tuple[int, ...] | None = None

    def kwargs(self) -> dict[str, object]:
        """The constructor arguments that this variant sets."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


RELEASED_CLUSTERS = (32, 8, 2, 1)  # SecViT's clusters per stage, every size

VARIANTS: dict[str, Variant] = {
    "secvit_tiny": Variant((64, 128, 256, 512), (2, 2, 9, 2), (2, 4, 8, 16), 0.1, clusters=RELEASED_CLUSTERS),
    "secvit_small": Variant((64, 128, 256, 512), (3, 4, 18, 4), (2, 4, 8, 16), 0.15, clusters=RELEASED_CLUSTERS),
    "secvit_base": Variant((80, 160, 320, 512), (4, 8, 26, 8), (5, 5, 10, 16), 0.4, (2, 3), RELEASED_CLUSTERS),
    "secvit_large": Variant((112, 224, 448, 640), (4, 8, 26, 8), (7, 7, 14, 20), 0.5, (2, 3), RELEASED_CLUSTERS),
}


#: The ablations of the paper's table 6 (its ``variant`` keys in ``secvit/tables/paper_results.yaml``)
#: as constructor options of the SecViT family (timm kwargs; the paper ablates SecViT-T).
ABLATIONS: dict[str, dict[str, object]] = {
    "seca_to_cswsa": {"attention": "cswsa"},  # cross-shaped window attention in place of SECA
    "no_lce": {"lce": False},
    "no_cpe": {"cpe": False},
    "no_conv_stem": {"conv_stem": False},  # a plain 4x4 stride-4 patch embedding
}


def ablation_options(name: str | None, model: str | None = None) -> dict[str, object]:
    """Constructor options of the table-6 ablation ``name`` (none for None); a one-line error for an
    unknown name, or for a ``model`` outside the SecViT family, whose constructor the options are for."""
    if name is None:
        return {}
    if name not in ABLATIONS:
        raise SecvitError(f"unknown ablation {name!r}; choose one of: {', '.join(ABLATIONS)}")
    if model is not None and model not in VARIANTS:
        raise SecvitError(f"--ablation {name} is an option of the SecViT family, not of {model}")
    return dict(ABLATIONS[name])


def default_clusters(model: str) -> tuple[int, ...] | None:
    """The released clusters per stage of a SecViT variant (None for any other model)."""
    variant = VARIANTS.get(model)
    return None if variant is None else variant.clusters
