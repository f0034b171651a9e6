"""Model complexity: parameters, FLOPs (fvcore) and throughput.

FLOP conventions (fvcore: one multiply-add counts as one FLOP; element-wise ops,
softmax and activations are not counted):

* ``gflops``: every counted op, including the attention matmuls QK^T and AV.
* ``gflops_no_attn``: the same without the attention matmuls QK^T and AV (inside
  each cluster, and the global attention of the last stage). This is the
  convention behind the paper's FLOP figures for SecViT.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from secvit.errors import SecvitError
from secvit.models.registry import create

SDPA_OP = "aten::scaled_dot_product_attention"


def _sdpa_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle: QK^T and AV of scaled_dot_product_attention, one FLOP per multiply-add."""
    q, k, v = (i.type().sizes() for i in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


FLOP_CONVENTION = "fvcore, 1 multiply-add = 1 FLOP; gflops_no_attn excludes attention QK^T and AV (the paper's convention)"


@dataclass
class Complexity:
    """Complexity figures of one model at one input size."""

    model: str
    img_size: tuple[int, int]
    params: int
    gflops: float
    gflops_no_attn: float
    flop_convention: str = FLOP_CONVENTION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_flops(model: nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """FLOPs of one forward pass: (all counted ops, without the attention matmuls)."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(SDPA_OP, _sdpa_flops)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        by_op = analysis.by_operator()
    finally:
        fvcore_logger.setLevel(level)
    total = sum(by_op.values())
    return int(total), int(total - by_op.get(SDPA_OP.removeprefix("aten::"), 0))


def measure(model_name: str, img_size: int | tuple[int, int] = 224, **model_kwargs) -> Complexity:
    """Parameters and FLOPs of a registered model at 1x3xHxW."""
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if min(size) < 1:
        raise SecvitError(f"image size must be positive, got {size[0]}x{size[1]}")
    model = create(model_name, **model_kwargs).eval()
    inputs = torch.zeros(1, 3, *size)
    model(inputs)  # surfaces input errors (e.g. too small) as one clear SecvitError
    with torch.no_grad():
        total, no_attn = count_flops(model, inputs)
    params = sum(p.numel() for p in model.parameters())
    return Complexity(model_name, size, params, total / 1e9, no_attn / 1e9)


def throughput(
    model_name: str,
    img_size: int = 224,
    batch_size: int = 64,
    steps: int = 30,
    warmup: int = 10,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> float:
    """Images per second of inference (the paper: A100, batch 64), timed by :mod:`secvit.timing`."""
    from secvit import timing

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return timing.throughput(create(model_name), img_size, batch_size, steps, warmup, device, dtype)
