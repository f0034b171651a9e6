"""Stage: params, FLOPs (both conventions) and throughput of every model of a profile,
including the cluster settings of the table-7 sweep and the table-6 ablations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secvit.atomic import write_json
from secvit.complexity import FLOP_CONVENTION, measure, throughput
from secvit.device import require_device
from secvit.models.variants import ablation_options, default_clusters
from secvit.params import load_section
from secvit.runs import COMPLEXITY, ablation_config, results_root, run_key, sweep_config


@dataclass
class ComplexityConfig:
    models: list[str]
    img_size: int
    throughput_batch: int
    throughput_steps: int
    throughput_warmup: int


def output(profile: str) -> Path:
    return results_root(profile) / COMPLEXITY


def complexity_stage(profile: str, params: Path, device: str | None = None) -> Path:
    require_device("complexity", profile, params, device)

    cfg = load_section(params, profile, "complexity", ComplexityConfig)
    sweep = sweep_config(params)
    ablations = ablation_config(params)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    runs: list[tuple[str, tuple[int, ...] | None, str | None]] = [(m, None, None) for m in cfg.models]
    runs += [(sweep.model, clusters, None) for clusters in sweep.parsed()]
    runs += [(ablations.model, None, name) for name in ablations.variants]
    rows: list[dict[str, Any]] = []
    for model, clusters, ablation in runs:
        kwargs = {"clusters": clusters} if clusters else {}
        kwargs.update(ablation_options(ablation))
        result = measure(model, cfg.img_size, **kwargs)
        speed = None
        if not kwargs and cfg.throughput_steps > 0:  # throughput of the registered models only
            speed = throughput(model, cfg.img_size, cfg.throughput_batch, cfg.throughput_steps, cfg.throughput_warmup, device=device)
        rows.append(
            {
                "key": run_key(model, clusters, ablation),
                "model": model,
                "ablation": ablation,
                "clusters": list(clusters or default_clusters(model) or []) or None,
                "params": result.params,
                "gflops": round(result.gflops, 4),
                "gflops_no_attn": round(result.gflops_no_attn, 4),
                "throughput": round(speed, 2) if speed is not None else None,
                "throughput_device": device_name if speed is not None else None,
            }
        )
    out = output(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"img_size": cfg.img_size, "flop_convention": FLOP_CONVENTION, "throughput_batch": cfg.throughput_batch, "rows": rows})
    return out
