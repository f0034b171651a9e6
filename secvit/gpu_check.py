"""The GPU check (``secvit doctor --run``, ``scripts/gpu_check.sh``): does the study run on this GPU?

On ``cuda`` it exercises what the paper profile uses, at real sizes, in a few minutes:

1. SECA: the fast path against the reference on the device, forward and backward, at the
   SecViT-S stage shapes of 224x224 (token counts divisible by the cluster counts) and of
   232x232 (not divisible);
2. 20 training steps of ``secvit_small`` (forward, cross-entropy, backward, AdamW) under bf16
   autocast, eager and with ``torch.compile``;
3. 20 training iterations each of Mask R-CNN and UperNet with a ``secvit_tiny`` backbone on the
   smoke profile's generated data (mmcv's CUDA RoIAlign and NMS, mmseg's head);
4. ``secvit bench models`` against Swin-T: inference img/s and peak memory at batch 64, fp32 and
   bf16 (what the paper's table 2 measures on an A100).

On ``cpu`` the same parts run at tiny sizes (a smoke test of the check itself), and
``torch.compile`` with the ``aot_eager`` backend (graph capture and AOT autograd without
inductor's code generation, which takes many minutes on a 2-core CPU).
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    seca_batch: int
    seca_images: tuple[int, int]  # one image size with divisible token counts, one without
    train_model: str
    train_batch: int
    train_image: int
    train_steps: int
    downstream_iters: int
    bench_models: tuple[str, ...]
    bench_batch: int
    bench_image: int  # 224: timm's Swin-T takes no other size
    bench_rounds: int
    compile_backend: str  # torch.compile's backend: inductor generates kernels; aot_eager only traces


SIZES = {
    "cuda": Sizes(8, (224, 232), "secvit_small", 64, 224, 20, 20, ("secvit_tiny", "secvit_small", "swin_tiny_patch4_window7_224"), 64, 224, 5, "inductor"),
    "cpu": Sizes(1, (64, 72), "secvit_tiny", 4, 64, 3, 2, ("secvit_tiny", "swin_tiny_patch4_window7_224"), 1, 224, 1, "aot_eager"),
}


@dataclass
class Check:
    part: str
    passed: bool
    detail: str
    seconds: float


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str) -> str:
    import torch

    return f", peak {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB" if device == "cuda" else ""


def check_seca(device: str, sizes: Sizes) -> list[Check]:
    """seca_fast against seca_reference (float32), forward and the gradient w.r.t. q, k and v."""
    import torch

    from secvit.bench import seca_shapes
    from secvit.models.seca import seca_fast, seca_reference, unpack_qkv

    checks = []
    for img in sizes.seca_images:
        start = time.perf_counter()
        worst_out = worst_grad = 0.0
        labels = []
        for shape in seca_shapes("secvit_small", img):
            if shape.clusters == 1:
                continue  # global attention: no clustering to check
            gen = torch.Generator().manual_seed(shape.stage)
            qkv = torch.randn(sizes.seca_batch, shape.tokens, 3, shape.heads, shape.head_dim, generator=gen).to(device)
            qkv[:, :, 1] *= shape.head_dim**-0.5
            qkv.requires_grad_()
            fast = seca_fast(qkv, shape.clusters)
            ref = seca_reference(*unpack_qkv(qkv), shape.clusters).transpose(1, 2).reshape_as(fast)
            grad = torch.randn_like(fast)
            (g_fast,) = torch.autograd.grad(fast, qkv, grad)
            (g_ref,) = torch.autograd.grad(ref, qkv, grad)
            worst_out = max(worst_out, ((fast - ref).abs().max() / ref.abs().max()).item())
            worst_grad = max(worst_grad, ((g_fast - g_ref).abs().max() / g_ref.abs().max()).item())
            labels.append(f"{shape.tokens}/{shape.clusters}")
        _sync(device)
        divisible = all(int(t) % int(c) == 0 for t, c in (label.split("/") for label in labels))
        passed = worst_out < 1e-4 and worst_grad < 1e-4
        checks.append(
            Check(
                f"SECA fast vs reference, {img}x{img} ({'divisible' if divisible else 'non-divisible'})",
                passed,
                f"tokens/clusters {', '.join(labels)}: max error / max |value| forward {worst_out:.1e}, backward {worst_grad:.1e} (limit 1e-4)",
                time.perf_counter() - start,
            )
        )
    return checks


def check_training(device: str, sizes: Sizes, compile_model: bool) -> Check:
    """``train_steps`` training steps under bf16 autocast: the loss stays finite; the speed."""
    import torch

    from secvit.bench import training_step
    from secvit.models.registry import create

    start = time.perf_counter()
    torch.manual_seed(0)
    model = create(sizes.train_model, num_classes=1000).to(device)
    if compile_model:
        model = torch.compile(model, backend=sizes.compile_backend)
    inputs = torch.randn(sizes.train_batch, 3, sizes.train_image, sizes.train_image, device=device)
    step = training_step(model, inputs, torch.bfloat16)
    _peak_reset(device)
    first = step().detach().item()  # includes the compilation
    _sync(device)
    warm = time.perf_counter()
    losses = [step().detach().item() for _ in range(sizes.train_steps - 1)]
    _sync(device)
    per_step = (time.perf_counter() - warm) / max(1, len(losses))
    finite = all(math.isfinite(x) for x in [first, *losses])
    mode = f"torch.compile ({sizes.compile_backend})" if compile_model else "eager"
    return Check(
        f"{sizes.train_steps} training steps, {sizes.train_model}, bf16 autocast, {mode}",
        finite,
        f"batch {sizes.train_batch} at {sizes.train_image}: first step{' (compiling)' if compile_model else ''} {warm - start:.1f} s, then "
        f"{1000 * per_step:.0f} ms/step = {sizes.train_batch / per_step:,.1f} img/s{_peak_mib(device)}; loss {first:.3f} -> "
        f"{losses[-1] if losses else first:.3f}",
        time.perf_counter() - start,
    )


def _downstream(task: str, device: str, iters: int, params: Path, work: Path) -> Check:
    """``iters`` training iterations of Mask R-CNN (detection) or UperNet (segmentation) with a
    secvit_tiny backbone, on data generated as the smoke profile generates it."""
    from mmengine.runner import Runner

    import secvit.downstream.backbone  # noqa: F401  (registers the backbone, hooks and file backend)
    import secvit.downstream.hooks  # noqa: F401
    from secvit.data.layout import ADE_DIR
    from secvit.data.synthetic import make_ade20k, make_coco
    from secvit.downstream.run import Overrides, prepare_config
    from secvit.params import from_section
    from secvit.pipelines.downstream import DETECTION_CONFIGS, SEGMENTATION_CONFIGS, DownstreamSettings, _coco_classes, config_file
    from secvit.pipelines.settings import data_config, load

    start = time.perf_counter()
    smoke = data_config(params, "smoke").generate or {}
    settings = load(params, "smoke", task, DownstreamSettings)
    overrides = from_section(Overrides, settings.overrides, f"smoke.{task}.overrides")
    batch = overrides.batch_per_device or 2
    if task == "detection":
        root = work / "coco"
        make_coco(root, **{**smoke.get("coco", {}), "train_images": batch * iters, "val_images": 2})
        config, swapped = config_file(DETECTION_CONFIGS[("mask_rcnn", "1x")], "secvit_tiny")
        length, classes, data_root, name = 1, _coco_classes(root), root, "Mask R-CNN 1x"
    else:
        root = work / "ade20k"
        make_ade20k(root, **{**smoke.get("ade20k", {}), "val_images": 2})
        config, swapped = config_file(SEGMENTATION_CONFIGS["upernet"], "secvit_tiny")
        length, classes, data_root, name = iters, None, root / ADE_DIR, "UperNet"
    overrides.length, overrides.checkpoint_every, overrides.val_every, overrides.log_level = length, length, length, "WARNING"
    cfg = prepare_config(
        config, work_dir=work / task, data_root=data_root, pretrained=None, overrides=overrides, classes=classes,
        model="secvit_tiny" if swapped else None,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # mmengine's and pycocotools' logs: the table reports
        runner = Runner.from_cfg(cfg)
        on = next(runner.model.parameters()).device.type
        began = time.perf_counter()
        runner.train()
        _sync(device)
        trained = time.perf_counter() - began
        done = runner.iter
        loss = float(runner.message_hub.get_scalar("train/loss").current())
        metrics = {k: float(v) for k, v in runner.test().items() if isinstance(v, numbers.Real)}
    shown = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in list(metrics.items())[:2])
    return Check(
        f"{iters} iterations of {name}, secvit_tiny, smoke data",
        done == iters and on == device and math.isfinite(loss),
        f"{done} iterations on {on} in {trained:.1f} s ({trained / max(done, 1):.2f} s/iter), last loss {loss:.3f}; test: {shown}",
        time.perf_counter() - start,
    )


def check_models(device: str, sizes: Sizes, progress: Progress | None) -> Check:
    from secvit.bench import bench_models

    start = time.perf_counter()
    result = bench_models(
        list(sizes.bench_models), batch=sizes.bench_batch, device=device, img_size=sizes.bench_image, rounds=sizes.bench_rounds,
        dtypes=("fp32", "bf16"), modes=("inference",), baseline="swin_tiny_patch4_window7_224", progress=progress,
    )
    cells = []
    for name, figures in result["models"].items():
        parts = []
        for dtype in ("fp32", "bf16"):
            f = figures[f"inference_{dtype}"]
            ratio = result["ratio_vs_baseline"].get(name, {}).get(f"inference_{dtype}")
            parts.append(f"{dtype} {f['img_per_s']:,.1f} img/s ({ratio:.2f}x) {f['peak_memory_mb']:,.0f} MiB")
        cells.append(f"{name}: " + ", ".join(parts))
    return Check(
        f"secvit bench models vs Swin-T, batch {sizes.bench_batch} at {sizes.bench_image}, inference",
        all(f["img_per_s"] > 0 for m in result["models"].values() for k, f in m.items() if k != "params"),
        "; ".join(cells),
        time.perf_counter() - start,
    )


def run_checks(device: str, params: Path, progress: Progress | None = None) -> list[Check]:
    """Every part of the GPU check on ``device`` (cuda: real sizes; cpu: tiny ones), in order.

    A part that raises is recorded as failed with its error, and the others still run.
    """
    import torch

    from secvit.errors import SecvitError

    if device not in SIZES:
        raise SecvitError(f"--device must be one of {', '.join(SIZES)}, got {device!r}")
    if device == "cuda":
        from secvit.gpu import cuda_report

        report = cuda_report()
        if not report.usable:
            raise SecvitError(f"the GPU check needs CUDA: {report.problem}")
    sizes = SIZES[device]
    say = progress or (lambda message: None)
    checks: list[Check] = []

    def attempt(part: str, fn: Callable[[], Any]) -> None:
        say(part)
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - the table reports it; the next part still runs
            message = (str(e).strip().splitlines() or [""])[0][:300]
            checks.append(Check(part, False, f"{type(e).__name__}: {message}", time.perf_counter() - start))
            return
        checks.extend(result if isinstance(result, list) else [result])

    with tempfile.TemporaryDirectory(prefix="secvit-gpu-check-") as tmp:
        work = Path(tmp)
        attempt("SECA fast vs reference", lambda: check_seca(device, sizes))
        attempt(f"training steps, {sizes.train_model}, eager", lambda: check_training(device, sizes, compile_model=False))
        attempt(f"training steps, {sizes.train_model}, torch.compile", lambda: check_training(device, sizes, compile_model=True))
        torch.manual_seed(0)
        attempt("Mask R-CNN", lambda: _downstream("detection", device, sizes.downstream_iters, params, work))
        attempt("UperNet", lambda: _downstream("segmentation", device, sizes.downstream_iters, params, work))
        attempt("bench models", lambda: check_models(device, sizes, progress))
    return checks
