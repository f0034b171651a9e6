"""The benchmarks, all of their measuring code in one place (``secvit bench``; no stage depends on them):

- :mod:`.seca`: SECA implementations at the SecViT-S stage shapes (``secvit bench seca``);
- :mod:`.models`: whole models, inference and training steps, fp32 and bf16 (``secvit bench models``);
- :mod:`.train`: this device's training and evaluation rates for the cost plan (``secvit bench train``);
- :mod:`.checkpoint`: the checkpoint write of each stage kind's biggest job (``python -m secvit.bench.checkpoint``);
- :mod:`.references`: the GFLOPs of the published detectors the cost plan is checked against
  (``python -m secvit.bench.references``).

This module records where and when figures were taken (:func:`environment`) and measures peak memory.
Timing itself is :mod:`secvit.timing` (round-robin candidates, medians over rounds), which the complexity
stage's throughput column shares.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch

from secvit.timing import sync

__all__ = ["env_line", "environment", "peak_memory"]


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak bytes allocated by torch during one call of ``fn`` (CUDA: allocator statistics;
    CPU: the running total of the profiler's allocation events)."""
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile  # the CPU path only; a sizeable import

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        ((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


# CPU features that decide fp32/bf16 matmul speed: hosts of one model name differ in them
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")


def _cpu_host() -> dict[str, Any]:
    """Linux CPU facts: ``model name``, ``cpu_isa`` (of :data:`_ISA_FLAGS`) and ``caches`` (L2, L3 per
    cache instance, as sysfs writes them); what cannot be read is left out."""
    host: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                host.setdefault("model name", value)
            elif key == "flags":
                flags = set(value.split())
                host["cpu_isa"] = [flag for flag in _ISA_FLAGS if flag in flags]
                break
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        with contextlib.suppress(OSError):
            level = (index / "level").read_text().strip()
            if level in ("2", "3"):
                caches[f"L{level}"] = (index / "size").read_text().strip()
    if caches:
        host["caches"] = caches
    return host


_CPU_ENV = ("GLIBC_TUNABLES", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def environment(device: torch.device | str) -> dict[str, Any]:
    """Where and when figures were taken."""
    device = torch.device(device)
    host: dict[str, Any] = {}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        host = {**_cpu_host(), "aten_kernels": torch.backends.cpu.get_cpu_capability()}
        name = host.pop("model name", platform.processor() or platform.machine())
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": name,
        **host,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        # settings that change CPU figures: glibc malloc (docs/benchmarks.md, "the allocator") and
        # caps on the instruction sets of ATen, oneDNN and MKL (an AVX2 host's kernels on an AVX-512 one)
        "cpu_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_") or k in _CPU_ENV},
    }


def env_line(result: dict[str, Any]) -> str:
    """The one line naming when, where and with what command a result's figures were taken."""
    env = result["environment"]
    settings = " ".join(f"{k}={v}" for k, v in env.get("cpu_env", {}).items())
    where = [env["device"], f"{env['threads']} threads"] + ([" ".join(env["cpu_isa"])] if env.get("cpu_isa") else [])
    where += [f"ATen {env['aten_kernels']} kernels"] if "aten_kernels" in env else []
    where += [f"{level} {size}" for level, size in env.get("caches", {}).items()]
    return (
        f"{env['date']}, {env['device_name']} ({', '.join(where)}), torch {env['torch']}, "
        f"timm {env['timm']}, Python {env['python']}; command: `{(settings + ' ') if settings else ''}{result['command']}`"
    )
