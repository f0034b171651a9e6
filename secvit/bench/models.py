"""``secvit bench models``: throughput and peak memory of whole models, inference and training steps, fp32 and
bf16, timed round-robin in one run (table 2's measurement)."""

from __future__ import annotations

from typing import Any

import torch

from secvit.bench import env_line, peak_memory
from secvit.engine.amp import DTYPES
from secvit.errors import SecvitError
from secvit.models.registry import create
from secvit.timing import Progress, inference_step, median, time_interleaved, training_step

__all__ = ["bench_models", "models_markdown"]


def bench_models(
    models: list[str],
    batch: int = 8,
    device: str = "cpu",
    img_size: int = 224,
    rounds: int = 5,
    dtypes: tuple[str, ...] = ("fp32", "bf16"),
    modes: tuple[str, ...] = ("inference", "training"),
    baseline: str | None = "swin_tiny_patch4_window7_224",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Throughput (img/s) and peak memory of every model, per mode and dtype, in one run;
    on CPU also the minor page faults per call (median over rounds).

    Models of one (mode, dtype) are timed interleaved; ratios are against ``baseline``.
    """
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise SecvitError(f"unknown dtype {unknown[0]}; use {', '.join(DTYPES)}")
    dev = torch.device(device)
    built = {}
    for name in models:
        torch.manual_seed(0)
        built[name] = create(name).to(dev)
        if progress:
            progress(f"built {name}")
    inputs = torch.randn(batch, 3, img_size, img_size, device=dev)
    results: dict[str, Any] = {name: {"params": sum(p.numel() for p in m.parameters())} for name, m in built.items()}
    for mode in modes:
        make = inference_step if mode == "inference" else training_step
        for dtype_name in dtypes:
            key = f"{mode}_{dtype_name}"
            steps = {name: make(m, inputs, DTYPES[dtype_name]) for name, m in built.items()}
            faults: dict[str, list[float]] | None = {} if dev.type == "cpu" else None
            samples = time_interleaved(
                steps, dev, rounds=rounds, progress=(lambda m: progress(f"{key}: {m}")) if progress else None, page_faults=faults
            )
            for name, step in steps.items():
                secs = median(samples[name])
                results[name][key] = {
                    "img_per_s": batch / secs,
                    "ms_per_batch": 1000 * secs,
                    "peak_memory_mb": peak_memory(step, dev) / 2**20,
                }
                if faults is not None:
                    results[name][key]["page_faults_per_call"] = median(faults[name])
    ratios: dict[str, Any] = {}
    if baseline in results:
        for name in results:
            ratios[name] = {
                key: results[name][key]["img_per_s"] / results[baseline][key]["img_per_s"]
                for key in results[name]
                if key != "params"
            }
    return {"batch": batch, "img_size": img_size, "rounds": rounds, "baseline": baseline, "models": results, "ratio_vs_baseline": ratios}


def models_markdown(result: dict[str, Any]) -> str:
    """Table of a :func:`bench_models` result (with ``environment`` and ``command`` added)."""
    first = next(iter(result["models"].values()))
    keys = [k for k in first if k != "params"]
    header = ["| model | " + " | ".join(k.replace("_", " ") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    lines = [
        env_line(result),
        "",
        f"img/s (ratio to {result['baseline']}) / peak MiB, batch {result['batch']} at {result['img_size']}x{result['img_size']}, median of {result['rounds']} interleaved rounds",
        "",
        *header,
    ]
    for name, figures in result["models"].items():
        ratios = result["ratio_vs_baseline"].get(name, {})
        cells = [
            f"{figures[k]['img_per_s']:.2f}" + (f" ({ratios[k]:.2f}x)" if k in ratios else "") + f" / {figures[k]['peak_memory_mb']:.0f}"
            for k in keys
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "page_faults_per_call" in first[keys[0]]:
        lines += ["", "Minor page faults per call (median over rounds; this process, all threads)", "", *header]
        for name, figures in result["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{figures[k]['page_faults_per_call']:,.0f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"
