"""Mixed precision: the one autocast rule of training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib

import torch

DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def autocast(device: torch.device | str, dtype: torch.dtype | str | None):
    """Autocast to ``dtype`` (a torch dtype or its name, ``"bfloat16"``) on ``device``; a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def recipe_dtype(amp_dtype: str | None, device: torch.device | str) -> str | None:
    """The autocast dtype a training recipe's ``amp_dtype`` gives on ``device``: the recipe's on GPUs,
    None (float32) on CPUs, where bf16 autocast is slow without native bf16 instructions."""
    return amp_dtype if torch.device(device).type == "cuda" else None
