"""Timing of model calls: round-robin timing of candidates and the inference throughput of a model.

All timing goes through :func:`time_interleaved`: the candidates of one comparison run round-robin
(A B C, A B C, ...) after a warm-up, and each candidate's figure is the median over rounds. On a
shared or throttling machine this keeps ratios between candidates meaningful even when absolute
figures drift. The complexity stage's throughput column (:func:`throughput`) and ``secvit bench``
(:mod:`secvit.bench`, which adds environment records and reports) both time with it.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from secvit.engine.amp import autocast

Progress = Callable[[str], None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    candidates: dict[str, Callable[[], Any]],
    device: torch.device | str = "cpu",
    rounds: int = 5,
    inner: int = 1,
    warmup: int = 1,
    progress: Progress | None = None,
    page_faults: dict[str, list[float]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every candidate, ``rounds`` samples each (each the mean of ``inner`` calls), by ``clock``
    (wall time; a CPU benchmark on a shared machine may pass its busy time).

    Candidates run round-robin, so slow drifts of the machine hit all of them alike. A
    ``page_faults`` dict receives, per candidate and round, the minor page faults of this
    process per call (:func:`minor_page_faults`): on CPU, the cost of memory that the
    allocator got fresh from the OS.
    """
    device = torch.device(device)
    for name, fn in candidates.items():
        for _ in range(warmup):
            fn()
        if progress:
            progress(f"warm-up {name}")
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds):
        for name, fn in candidates.items():
            sync(device)
            faults = minor_page_faults() if page_faults is not None else 0
            start = clock()
            for _ in range(inner):
                fn()
            sync(device)
            samples[name].append((clock() - start) / inner)
            if page_faults is not None:
                page_faults.setdefault(name, []).append((minor_page_faults() - faults) / inner)
            if progress:
                progress(f"round {r + 1}/{rounds} {name}")
    return samples


def minor_page_faults() -> int:
    """Minor page faults of this process so far (``getrusage``): first touches of memory mapped
    fresh from the OS, as glibc's malloc does for large blocks and after returning heap memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def median(samples: list[float]) -> float:
    return statistics.median(samples)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def inference_step(model: nn.Module, inputs: Tensor, dtype: torch.dtype | None) -> Callable[[], Any]:
    """One no-grad forward pass of ``model`` in eval mode (under autocast to ``dtype``)."""

    def step() -> Any:
        with torch.no_grad(), _eval_mode(model), autocast(inputs.device, dtype):
            return model(inputs)

    return step


def training_step(model: nn.Module, inputs: Tensor, dtype: torch.dtype | None) -> Callable[[], Any]:
    """One training step: forward under autocast, cross-entropy, backward, AdamW update."""
    targets = torch.arange(inputs.shape[0], device=inputs.device) % 10
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True if inputs.device.type == "cuda" else None)

    def step() -> Any:
        model.train()
        with autocast(inputs.device, dtype):
            loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def throughput(
    model: nn.Module,
    img_size: int = 224,
    batch_size: int = 64,
    steps: int = 30,
    warmup: int = 10,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> float:
    """Images per second of inference of one model (median over ``steps`` timed calls)."""
    dev = torch.device(device)
    model = model.to(dev)
    inputs = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    samples = time_interleaved({"model": inference_step(model, inputs, dtype)}, dev, rounds=steps, warmup=warmup)
    return batch_size / median(samples["model"])


