"""Model lookup with user-facing errors (timm's registry underneath)."""

from __future__ import annotations

import timm
from torch import nn

from secvit.errors import SecvitError

FAMILIES = ("secvit_", "sec_swin_", "sec_fastervit_", "stvit_", "pacavit_")


def available_models() -> list[str]:
    """Names of the backbones this project provides."""
    return sorted(name for family in FAMILIES for name in timm.list_models(f"{family}*"))


def check_model(name: str) -> str:
    """``name`` if timm knows the model, else a one-line error listing ours."""
    if name not in timm.list_models():
        raise SecvitError(
            f"unknown model {name!r}; choose one of: {', '.join(available_models())} (or any timm model name)"
        )
    return name


def create(name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` that rejects unknown names with a one-line error listing the valid ones."""
    return timm.create_model(check_model(name), **kwargs)
