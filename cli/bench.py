"""Benchmark commands: ``secvit bench seca``, ``models``, ``train`` and ``compile`` (secvit/bench/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from secvit.cli.common import console, user_errors

app = typer.Typer(help="Speed benchmarks: SECA implementations, whole models, and this device's rates for `secvit plan` (figures in docs/benchmarks.md).", no_args_is_help=True)

DeviceOpt = Annotated[str, typer.Option(help="Device to run on: cpu, cuda, cuda:1, ...")]
BatchOpt = Annotated[int, typer.Option(help="Batch size.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print markdown tables (as in docs/benchmarks.md).")]
RoundsOpt = Annotated[int, typer.Option(help="Timed rounds per candidate (median reported); candidates run interleaved.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice, one per core).")]


def _threads(threads: int | None) -> str:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return f" --threads {threads}" if threads is not None else ""


def _progress():
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)


@user_errors
def seca(device: DeviceOpt = "cpu", batch: BatchOpt = 8, rounds: RoundsOpt = 7, threads: ThreadsOpt = None, json_out: JsonOpt = False, markdown: MarkdownOpt = False) -> None:
    """Appendix-E code vs seca_reference vs seca_fast at the four SecViT-S stage shapes (224x224)."""
    from secvit.bench import environment
    from secvit.bench.seca import bench_seca

    threads_arg = _threads(threads)

    with _progress() as progress:
        task = progress.add_task("seca")
        result = bench_seca(batch=batch, device=device, rounds=rounds, progress=lambda m: progress.update(task, description=m))
    result = {"environment": environment(device), "command": f"secvit bench seca --device {device} --batch {batch} --rounds {rounds}{threads_arg}", **result}
    if json_out:
        print(json.dumps(result, indent=1))
        return
    if markdown:
        from secvit.bench.seca import seca_markdown

        print(seca_markdown(result))
        return
    for mode in ("forward", "forward_backward"):
        table = Table(title=f"SECA {mode.replace('_', '+')}, batch {batch}, {device} (ms; speed-up vs appendix E)")
        for col in ("stage", "tokens", "clusters", "heads x d", "appendix E", "reference", "fast"):
            table.add_column(col, justify="right")
        for row in result["shapes"]:
            ms, up = row[mode]["ms"], row[mode]["speedup_vs_appendix_e"]
            table.add_row(
                str(row["stage"]), str(row["tokens"]), str(row["clusters"]), f"{row['heads']} x {row['head_dim']}",
                f"{ms['appendix_e']:.2f}", f"{ms['reference']:.2f} ({up['reference']:.2f}x)", f"{ms['fast']:.2f} ({up['fast']:.2f}x)",
            )
        geo = result["geomean_speedup_vs_appendix_e"][mode]
        table.add_row("geomean", "", "", "", "1.00x", f"{geo['reference']:.2f}x", f"{geo['fast']:.2f}x")
        console.print(table)


@user_errors
def models(
    names: Annotated[list[str] | None, typer.Argument(help="Models (default: SecViT-T/S, Swin-T, ConvNeXt-T).")] = None,
    device: DeviceOpt = "cpu",
    batch: BatchOpt = 8,
    rounds: RoundsOpt = 5,
    img_size: Annotated[int, typer.Option(help="Square input size.")] = 224,
    dtype: Annotated[list[str] | None, typer.Option(help="fp32 and/or bf16 (autocast); repeatable.")] = None,
    mode: Annotated[list[str] | None, typer.Option(help="inference and/or training; repeatable.")] = None,
    baseline: Annotated[str, typer.Option(help="Ratios are throughput / this model's throughput.")] = "swin_tiny_patch4_window7_224",
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """Inference and training-step throughput and peak memory of models, fp32 and bf16, in one run."""
    from secvit.bench import environment
    from secvit.bench.models import bench_models
    from secvit.errors import SecvitError

    threads_arg = _threads(threads)
    # CPU peak memory comes from torch's profiler, whose kineto logs every start and stop (and, on
    # machines without a GPU, an ERROR line about it) unless told otherwise before its first use
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    names = names or ["secvit_tiny", "secvit_small", "swin_tiny_patch4_window7_224", "convnext_tiny"]
    modes = tuple(mode or ("inference", "training"))
    if any(m not in ("inference", "training") for m in modes):
        raise SecvitError("--mode must be inference or training")
    dtypes = tuple(dtype or ("fp32", "bf16"))
    with _progress() as progress:
        task = progress.add_task("models")
        result = bench_models(names, batch=batch, device=device, img_size=img_size, rounds=rounds, dtypes=dtypes, modes=modes,
                              baseline=baseline, progress=lambda m: progress.update(task, description=m))
    command = (
        f"secvit bench models {' '.join(names)} --device {device} --batch {batch} --rounds {rounds} --img-size {img_size}"
        + "".join(f" --dtype {d}" for d in dtypes) + "".join(f" --mode {m}" for m in modes) + f" --baseline {baseline}{threads_arg}"
    )
    result = {"environment": environment(device), "command": command, **result}
    if json_out:
        print(json.dumps(result, indent=1))
        return
    if markdown:
        from secvit.bench.models import models_markdown

        print(models_markdown(result))
        return
    keys = [f"{m}_{d}" for m in modes for d in dtypes]
    table = Table(title=f"img/s (ratio vs {baseline}), peak MiB (and on CPU minor page faults) per call, batch {batch} at {img_size}, {device}")
    table.add_column("model")
    for key in keys:
        table.add_column(key.replace("_", " "), justify="right")
    for name, figures in result["models"].items():
        ratios = result["ratio_vs_baseline"].get(name, {})
        cells = []
        for key in keys:
            f = figures[key]
            ratio = f" ({ratios[key]:.2f}x)" if key in ratios else ""
            faults = f"\n{f['page_faults_per_call']:,.0f} page faults" if "page_faults_per_call" in f else ""
            cells.append(f"{f['img_per_s']:.2f}{ratio}\n{f['peak_memory_mb']:.0f} MiB{faults}")
        table.add_row(name, *cells)
    console.print(table)


@user_errors
def train(
    profile: Annotated[str, typer.Option(help="Profile whose recipe is timed (image size, batch per device, optimizer, EMA).")] = "smoke",
    model: Annotated[str, typer.Option(help="Model to time.")] = "secvit_tiny",
    steps: Annotated[int, typer.Option(help="Timed training steps (and as many evaluation steps).")] = 6,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available).", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Where the rates go; `secvit plan` reads this file by default.")] = Path("runs/bench/throughput.json"),
    params: Annotated[Path, typer.Option(help="The params file.")] = Path("params.yaml"),
    threads: Annotated[int | None, typer.Option(help="CPU threads, as each stage gets them (`secvit repro --jobs N`: cores / N).",
                                                show_default=False)] = None,
) -> None:
    """Measure this device's training and evaluation rates (GFLOPs/s) and a stage's start-up for `secvit plan`."""
    from secvit.bench.train import measure
    from secvit.cost.rates import save_throughput

    _threads(threads)
    rate = measure(profile, model, params, steps=steps, device=device)
    save_throughput(rate, out)
    curve = ", ".join(f"{r:,.1f} GFLOPs/s at {g:.2g} GFLOPs/image" for g, r in rate.eval_curve)
    console.print(
        f"{rate.device}: training {rate.train_gflops_per_s:,.1f} GFLOPs/s ({rate.measured['train_images_per_s']:.1f} img/s), "
        f"evaluation {curve or f'{rate.eval_gflops_per_s:,.1f} GFLOPs/s'}, start-up {rate.startup_s:.1f} s "
        f"(+{rate.dense_startup_s:.1f} s for detection and segmentation), checkpoints {rate.checkpoint_gb_per_s:.2f} GB/s -> {out}"
    )


@user_errors
def compile(  # noqa: A001 - the command's name
    profile: Annotated[str, typer.Option(help="Profile whose recipe is timed (optimizer, EMA, autocast, channels-last).")] = "paper",
    model: Annotated[str, typer.Option(help="Model to time.")] = "secvit_tiny",
    batch: Annotated[int | None, typer.Option(help="Images per step (default: the profile's batch per device).", show_default=False)] = None,
    img_size: Annotated[int | None, typer.Option(help="Square input size (default: the profile's).", show_default=False)] = None,
    rounds: RoundsOpt = 5,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available).", show_default=False)] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
    markdown: MarkdownOpt = False,
) -> None:
    """The pretraining step eager and compiled (torch.compile, inductor), with the compile time: does `compile: true` pay?"""
    from secvit.bench import environment
    from secvit.bench.compile import bench_compile, compile_markdown

    threads_arg = _threads(threads)
    with _progress() as progress:
        task = progress.add_task("compile")
        result = bench_compile(profile, model, batch=batch, img_size=img_size, rounds=rounds, device=device,
                               progress=lambda m: progress.update(task, description=m))
    command = (
        f"secvit bench compile --profile {profile} --model {model}" + (f" --batch {batch}" if batch else "")
        + (f" --img-size {img_size}" if img_size else "") + f" --rounds {rounds}" + (f" --device {device}" if device else "") + threads_arg
    )
    result = {"environment": environment(result["device"]), "command": command, **result}
    if json_out:
        print(json.dumps(result, indent=1))
    elif markdown:
        print(compile_markdown(result))
    else:
        even = f"pays back after {result['break_even_steps']:,} steps" if result["break_even_steps"] else "never pays back"
        console.print(
            f"{model}, batch {result['batch']} at {result['img_size']} on {result['device']}: eager {result['eager_ms']:,.1f} ms/step, "
            f"compiled {result['compiled_ms']:,.1f} ms/step ({result['speedup']:.2f}x) after {result['compile_s']:,.1f} s compiling: {even}"
        )


def register(root: typer.Typer) -> None:
    for func in (seca, models, train, compile):
        app.command(name=func.__name__)(func)
    root.add_typer(app, name="bench")
