"""Speed benchmarks: SECA implementations at the SecViT-S stage shapes, and whole models, with a
record of the environment that gave each figure and markdown reports (``secvit bench``).

Timing itself is :mod:`secvit.timing` (round-robin candidates, medians over rounds), which the
complexity stage's throughput column shares; this module is no stage's dependency.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from secvit.engine.amp import DTYPES
from secvit.errors import SecvitError
from secvit.models.seca import seca_fast, seca_reference, unpack_qkv
from secvit.timing import Progress, inference_step, median, sync, time_interleaved, training_step


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
    from torch.profiler import ProfilerActivity, profile

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
    import timm

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


# ---------------------------------------------------------------------------
# SECA


def appendix_e_seca(qkv: Tensor, num_heads: int, num_clusters: int) -> Tensor:
    """The paper's appendix-E SECA forward (lines 45-71), from the qkv projection
    (B, 3C, H, W) to the attention output (B, C, H, W): the baseline of ``secvit bench seca``.

    Transcribed as printed, with each einops ``rearrange`` written as the equivalent
    reshape/permute (einops is not a dependency here): the mean of the scaled keys is the centre (``sort_sim(k, k)``),
    the inverse order comes from a second sort, and the released code asserts that the
    clusters divide the tokens. Like the paper's code, it has no rotary embedding; the
    rotation and the key scaling of our model happen in one pass before SECA.
    """
    bsz, _, h, w = qkv.shape
    head_dim = qkv.shape[1] // 3 // num_heads
    assert (h * w) % num_clusters == 0
    # rearrange(qkv, "b (m n d) h w -> m b n (h w) d", m=3, n=num_heads)
    q, k, v = qkv.reshape(bsz, 3, num_heads, head_dim, h * w).permute(1, 0, 2, 4, 3)
    k = k * head_dim**-0.5
    if num_clusters > 1:
        cls_token = F.normalize(k.mean(2, keepdim=True), dim=-1)
        cos_sim = cls_token @ F.normalize(k, dim=-1).transpose(-1, -2)
        indices = torch.argsort(cos_sim, dim=-1).squeeze(2)
        q, k, v = (torch.gather(t, dim=-2, index=indices.unsqueeze(-1).expand_as(t)) for t in (q, k, v))
        # rearrange(t, "b n (c l) d -> b n c l d", c=num_clusters)
        q_l, k_l, v = (t.reshape(bsz, num_heads, num_clusters, -1, head_dim) for t in (q, k, v))
        attn = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
        v = attn @ v
        v = v.reshape(bsz, num_heads, h * w, head_dim)  # "b n c l d -> b n (c l) d"
        v = torch.gather(v, dim=-2, index=indices.sort(dim=-1).indices.unsqueeze(-1).expand_as(v))
    else:
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        v = attn @ v
    # rearrange(v, "b n (h w) d -> b (n d) h w", h=h, w=w)
    return v.transpose(-1, -2).reshape(bsz, num_heads * head_dim, h, w)


@dataclass(frozen=True)
class SecaShape:
    """One stage's SECA problem at a given batch and image size."""

    stage: int
    tokens: int
    height: int
    width: int
    heads: int
    head_dim: int
    clusters: int

    @property
    def label(self) -> str:
        return f"stage {self.stage}: {self.height}x{self.width} tokens, {self.clusters} clusters, {self.heads}x{self.head_dim}"


def seca_shapes(model: str = "secvit_small", img_size: int = 224) -> list[SecaShape]:
    """The SECA shapes of ``model``'s four stages at ``img_size``."""
    from secvit.models.secvit import VARIANTS
    from secvit.models.staged import stage_side

    arch = VARIANTS[model]
    shapes = []
    for i, (width, heads, clusters) in enumerate(zip(arch.widths, arch.heads, arch.clusters)):
        side = stage_side(img_size, i)
        shapes.append(SecaShape(i + 1, side * side, side, side, heads, width // heads, clusters))
    return shapes


def _seca_inputs(shape: SecaShape, batch: int, device: torch.device, grad: bool, seed: int = 0) -> dict[str, Tensor]:
    """One packed q/k/v tensor (k scaled) and the same values as the NCHW projection appendix E takes."""
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randn(batch, shape.tokens, 3, shape.heads, shape.head_dim, generator=gen).to(device)
    unscaled = packed.clone()
    unscaled[:, :, 1] /= shape.head_dim**-0.5
    nchw = unscaled.permute(0, 2, 3, 4, 1).reshape(batch, -1, shape.height, shape.width).contiguous()
    return {"packed": packed.requires_grad_(grad), "nchw": nchw.requires_grad_(grad)}


def _seca_candidates(shape: SecaShape, inputs: dict[str, Tensor]) -> dict[str, Callable[[], Tensor]]:
    """Each implementation, from its own input layout to (B, N, C) token layout."""
    packed, nchw = inputs["packed"], inputs["nchw"]
    bsz = packed.shape[0]
    return {
        "appendix_e": lambda: appendix_e_seca(nchw, shape.heads, shape.clusters).flatten(2).transpose(1, 2),
        "reference": lambda: seca_reference(*unpack_qkv(packed), shape.clusters).transpose(1, 2).reshape(bsz, shape.tokens, -1),
        "fast": lambda: seca_fast(packed, shape.clusters),
    }


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def bench_seca(
    batch: int = 8,
    device: str = "cpu",
    rounds: int = 7,
    model: str = "secvit_small",
    img_size: int = 224,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Time appendix-E code, :func:`seca_reference` and :func:`seca_fast` at every stage shape of
    ``model``, forward and forward+backward; check they agree first."""
    dev = torch.device(device)
    rows = []
    for shape in seca_shapes(model, img_size):
        row: dict[str, Any] = {"stage": shape.stage, "tokens": shape.tokens, "heads": shape.heads, "head_dim": shape.head_dim, "clusters": shape.clusters}
        # agreement (also of gradients) before timing
        inputs = _seca_inputs(shape, batch, dev, grad=True)
        outs = {name: fn() for name, fn in _seca_candidates(shape, inputs).items()}
        base = outs["appendix_e"]
        grad = torch.randn_like(base)
        grads = {}
        for name, out in outs.items():
            (g,) = torch.autograd.grad(out, inputs["nchw" if name == "appendix_e" else "packed"], grad)
            grads[name] = g if name != "appendix_e" else None
        row["max_abs_diff"] = {name: float((out - base).detach().abs().max()) for name, out in outs.items() if name != "appendix_e"}
        row["max_abs_grad_diff_fast_vs_reference"] = float((grads["fast"] - grads["reference"]).abs().max())
        for mode in ("forward", "forward_backward"):
            training = mode == "forward_backward"
            inputs = _seca_inputs(shape, batch, dev, grad=training)
            candidates = _seca_candidates(shape, inputs)
            if training:
                candidates = {name: (lambda fn=fn: fn().backward(grad)) for name, fn in candidates.items()}
            else:
                candidates = {name: (lambda fn=fn: _no_grad(fn)) for name, fn in candidates.items()}
            label = f"seca stage {shape.stage} {mode}"
            samples = time_interleaved(candidates, dev, rounds=rounds, progress=(lambda m: progress(f"{label}: {m}")) if progress else None)
            ms = {name: 1000 * median(s) for name, s in samples.items()}
            row[mode] = {
                "ms": ms,
                "speedup_vs_appendix_e": {name: ms["appendix_e"] / t for name, t in ms.items()},
            }
        rows.append(row)
    summary = {
        mode: {
            name: _geomean([r[mode]["speedup_vs_appendix_e"][name] for r in rows])
            for name in ("reference", "fast")
        }
        for mode in ("forward", "forward_backward")
    }
    return {"model": model, "img_size": img_size, "batch": batch, "rounds": rounds, "shapes": rows, "geomean_speedup_vs_appendix_e": summary}


def _no_grad(fn: Callable[[], Any]) -> Any:
    with torch.no_grad():
        return fn()


# ---------------------------------------------------------------------------
# Models


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
    from secvit.models.registry import create

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


# ---------------------------------------------------------------------------
# Markdown (docs/benchmarks.md)


def _env_line(result: dict[str, Any]) -> str:
    env = result["environment"]
    settings = " ".join(f"{k}={v}" for k, v in env.get("cpu_env", {}).items())
    where = [env["device"], f"{env['threads']} threads"] + ([" ".join(env["cpu_isa"])] if env.get("cpu_isa") else [])
    where += [f"ATen {env['aten_kernels']} kernels"] if "aten_kernels" in env else []
    where += [f"{level} {size}" for level, size in env.get("caches", {}).items()]
    return (
        f"{env['date']}, {env['device_name']} ({', '.join(where)}), torch {env['torch']}, "
        f"timm {env['timm']}, Python {env['python']}; command: `{(settings + ' ') if settings else ''}{result['command']}`"
    )


def seca_markdown(result: dict[str, Any]) -> str:
    """Tables of a :func:`bench_seca` result (with ``environment`` and ``command`` added)."""
    lines = [_env_line(result), ""]
    for mode in ("forward", "forward_backward"):
        lines += [
            f"| stage | tokens | clusters | heads x d | {mode.replace('_', '+')} appendix E ms | reference ms | fast ms | fast vs appendix E |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in result["shapes"]:
            ms, up = row[mode]["ms"], row[mode]["speedup_vs_appendix_e"]
            lines.append(
                f"| {row['stage']} | {row['tokens']} | {row['clusters']} | {row['heads']} x {row['head_dim']} | "
                f"{ms['appendix_e']:.2f} | {ms['reference']:.2f} ({up['reference']:.2f}x) | {ms['fast']:.2f} | {up['fast']:.2f}x |"
            )
        geo = result["geomean_speedup_vs_appendix_e"][mode]
        lines += [f"| geomean | | | | 1.00x | {geo['reference']:.2f}x | | {geo['fast']:.2f}x |", ""]
    return "\n".join(lines)


def models_markdown(result: dict[str, Any]) -> str:
    """Table of a :func:`bench_models` result (with ``environment`` and ``command`` added)."""
    first = next(iter(result["models"].values()))
    keys = [k for k in first if k != "params"]
    header = ["| model | " + " | ".join(k.replace("_", " ") for k in keys) + " |", "|---|" + "---|" * len(keys)]
    lines = [
        _env_line(result),
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
