"""``secvit bench compile``: the pretraining step eager and with ``torch.compile``, the compile time counted:
whether ``compile: true`` (``<profile>.pretrain_speed``) pays for a profile's runs on this device.

The step is the engine's (:func:`secvit.engine.train.train_one_epoch` without the data loader): forward
under the recipe's autocast, the loss, backward, the optimizer step and the EMA update, on the model and
optimizer that :func:`secvit.engine.train.build_training` builds, compiled as the engine compiles it
(``torch.compile(training.model)``, inductor). Both are timed round-robin on synthetic batches.

On a GPU the figures are wall time. On a CPU they are busy time, as ``secvit bench train`` takes them: the CPU
seconds of this process and the compiler processes it waited for (inductor compiles in this process there), the
steps' over the threads; on a machine shared with other work that is what an idle machine's wall time would be,
for one thread exactly (more threads also count their waits on each other).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from secvit.bench import env_line
from secvit.engine.amp import autocast, recipe_dtype
from secvit.engine.config import pretrain_config
from secvit.engine.distributed import DistEnv
from secvit.engine.train import build_training
from secvit.errors import SecvitError
from secvit.models.registry import check_model
from secvit.params import load_params, profile_section
from secvit.timing import Progress, median, sync, time_interleaved

__all__ = ["bench_compile", "compile_markdown"]


def _busy() -> float:
    """CPU seconds of this process and of the child processes it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench_compile(
    profile: str, model: str, params: Path = Path("params.yaml"), batch: int | None = None, img_size: int | None = None,
    rounds: int = 5, device: str | None = None, backend: str = "inductor", train_images: int = 1_281_167,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Eager and compiled training steps of ``model`` with the profile's recipe (``batch`` and ``img_size``
    override its batch per device and image size, e.g. for a CPU); the first compiled step, less a compiled
    step, is the compile time. ``train_images`` (ImageNet-1K's by default) sizes a whole run for the
    break-even (the micro-batches after which the compile time is paid back) and a whole run's device-hours,
    eager and compiled, with one compile per device (the profile's global batch over its batch per device) and
    process start (a run resumed after a time limit compiles again)."""
    check_model(model)
    if rounds < 1:
        raise SecvitError(f"need rounds >= 1, got {rounds}")
    own = model in (profile_section(load_params(params), profile, "pretrain_runs") or {})
    recipe = pretrain_config(params, profile, model if own else None)
    devices = max(1, recipe.batch_size // recipe.batch_per_device)
    cfg = dataclasses.replace(recipe, batch_per_device=batch or recipe.batch_per_device, img_size=img_size or recipe.img_size)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    training = build_training(model, cfg, 1000, DistEnv(0, 1, 0, dev), {})
    dtype = recipe_dtype(cfg.amp_dtype, dev)
    images = torch.randn(cfg.batch_per_device, 3, cfg.img_size, cfg.img_size, device=dev)
    targets = torch.randint(0, 1000, (cfg.batch_per_device,), device=dev)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if training.mixup is not None:  # the recipe's Mixup/CutMix: soft targets, as the loss expects
        images, targets = training.mixup(images, targets)
    compiled = torch.compile(training.model, backend=backend)  # as pretrain() compiles it (backend inductor)

    def step(module: torch.nn.Module) -> None:
        with autocast(dev, dtype):
            loss = training.criterion(module(images), targets)
        loss.backward()
        training.optimizer.step()
        training.optimizer.zero_grad(set_to_none=True)
        if training.ema is not None:
            training.ema.update(training.model)

    if dev.type == "cpu":
        import torch._inductor.config as inductor  # a torch submodule that `import torch` does not load

        inductor.compile_threads = 1  # C++ compiles in processes it waits for: their time is counted
        threads = torch.get_num_threads()
        busy, clock = _busy, lambda: _busy() / threads
    else:
        busy = clock = time.perf_counter
    training.model.train()
    say = progress or (lambda message: None)
    say("eager warm-up")
    step(training.model)
    say(f"compiling ({backend})")
    sync(dev)
    tic = busy()
    step(compiled)
    sync(dev)
    first = busy() - tic
    samples = time_interleaved({"eager": lambda: step(training.model), "compiled": lambda: step(compiled)}, dev, rounds=rounds,
                               progress=progress, clock=clock)
    eager_s, compiled_s = median(samples["eager"]), median(samples["compiled"])
    compile_s = max(first - compiled_s * (torch.get_num_threads() if dev.type == "cpu" else 1), 0.0)
    saved = eager_s - compiled_s
    micro_batches = cfg.epochs * train_images / cfg.batch_per_device  # a whole run at this batch, all devices together
    return {
        "profile": profile, "model": model, "device": str(dev), "backend": backend, "batch": cfg.batch_per_device,
        "clock": "busy" if dev.type == "cpu" else "wall",
        "img_size": cfg.img_size, "amp_dtype": dtype, "rounds": rounds,
        "eager_ms": 1000 * eager_s, "compiled_ms": 1000 * compiled_s, "speedup": eager_s / compiled_s, "compile_s": compile_s,
        "break_even_steps": math.ceil(compile_s / saved) if saved > 0 else None,
        "run": {"train_images": train_images, "epochs": cfg.epochs, "micro_batches": micro_batches, "devices": devices,
                "eager_device_h": micro_batches * eager_s / 3600, "compiled_device_h": (micro_batches * compiled_s + devices * compile_s) / 3600},
    }


def compile_markdown(result: dict[str, Any]) -> str:
    """One table row per result (with ``environment`` and ``command`` added), under the line saying where."""
    run = result["run"]
    even = f"{result['break_even_steps']:,}" if result["break_even_steps"] is not None else "never"
    return "\n".join([
        env_line(result),
        "",
        "| model | batch x px | eager ms/step | compiled ms/step | compiled / eager speed | compile s | pays back after (steps) | "
        "a run's device-hours here, eager / compiled |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| {result['model']} | {result['batch']} x {result['img_size']} | {result['eager_ms']:,.1f} | {result['compiled_ms']:,.1f} | "
        f"{result['speedup']:.2f}x | {result['compile_s']:,.1f} | {even} | {run['eager_device_h']:,.0f} / {run['compiled_device_h']:,.0f} |",
    ]) + "\n"
