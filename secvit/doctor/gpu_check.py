"""The GPU check (``secvit doctor --run``, ``scripts/gpu_check.sh``): does the study run on this GPU?

On ``cuda`` it exercises what the paper profile uses, at real sizes, within minutes (docs/gpu.md):

``seca``
    SECA's fast path against the plain reference on the device, forward and backward, in fp32 and in
    bf16, at the SecViT-S stage shapes of 224x224 (token counts divisible by the cluster counts) and
    of 232x232 (not divisible);
``families``
    every family's smallest model (:data:`FAMILY_MODELS`): a forward pass and training steps in bf16,
    eager and ``torch.compile(fullgraph=True)``: the compiled outputs and losses against the eager ones,
    the compile time, and the compiled training step's speed against the eager one. On ``cuda`` each
    family compiles in a process of its own, all at once (inductor's tracing is single-threaded), and
    then each times its steps in turn;
``throughput``
    SecViT-T, SecViT-S and SEC-Swin-T against timm's Swin-T, inference at batch 64 and 224x224 in fp32
    and bf16: table 2's setting (the paper's A100 figures beside them);
``memory``
    peak memory per image of a bf16 training step at the paper's batch per device
    (``paper.pretrain_speed.batch_per_device``);
``pretrain``
    a few pretraining steps through the real stage (``secvit pretrain`` in a scratch project, on data
    generated as the smoke profile generates it);
``dense``
    where mmcv's ops for the device are present: training iterations of Mask R-CNN and UperNet with a
    ``secvit_tiny`` backbone (mmcv's RoIAlign and NMS, mmseg's head); skipped otherwise (a machine with
    its own torch and no OpenMMLab).

On ``cpu`` the same parts run at tiny sizes: a test of the check itself, which the suite runs. There the
families have one block per stage, only the first compiles (with the ``eager`` backend: Dynamo's graph
capture, whose ``fullgraph=True`` fails on any graph break, without code generation), and the dense
part runs (one iteration each) only when asked for: ``--parts dense``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import multiprocessing as mp
import numbers
import os
import queue as queues
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from secvit.bench import env_line, environment
from secvit.bench.models import bench_models
from secvit.bench.seca import seca_shapes
from secvit.data.config import data_config
from secvit.data.layout import ADE_DIR
from secvit.data.synthetic import make_ade20k, make_coco, make_imagenet
from secvit.device import cuda_report, mmcv_problem, mmcv_report
from secvit.doctor.report import lock_in_use
from secvit.downstream.config import DETECTION_CONFIGS, SEGMENTATION_CONFIGS, coco_classes, config_file, load_overrides, prepare_config
from secvit.engine.amp import DTYPES
from secvit.errors import SecvitError
from secvit.models.registry import create
from secvit.models.seca import seca_fast, seca_reference, unpack_qkv
from secvit.params import load_params, profile_section
from secvit.tables.paper import load_paper_tables, paper_value
from secvit.timing import inference_step, training_step

Progress = Callable[[str], None]
PASS, FAIL, SKIP = "pass", "fail", "skip"
PARTS = ("seca", "families", "throughput", "memory", "pretrain", "dense")
#: The smallest variant of each model family (tests/test_speed.py checks that against the registry).
FAMILY_MODELS = ("secvit_tiny", "sec_swin_tiny", "sec_fastervit_0", "stvit_small", "pacavit_tiny")
SWIN_T = "swin_tiny_patch4_window7_224"
#: The limits on max |fast - reference| / max |reference|: fp32 agrees to rounding; in bf16 both sides round
#: every product and sum to 8 significant bits (2**-8 = 0.4%), the fused kernels at other places than the
#: reference's matmuls and softmax.
SECA_LIMITS = {"fp32": 1e-4, "bf16": 5e-2}
#: Compiled against eager: max |difference| / max |eager| of the fp32 logits, and the first bf16 training loss's difference.
COMPILE_LIMITS = {"logits": 1e-2, "loss": 2e-2}


@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    seca_batch: int
    seca_images: tuple[int, int]  # one image size with divisible token counts, one without
    dtype: str  # of the families' and the memory part's steps: bf16 as the paper trains; cpu: fp32 (bf16 is slow without AMX)
    family_kwargs: dict[str, Any]  # model options of the families part: no drop path (its draws are not eager's in
    # compiled code, so the losses would not compare; tests/test_speed.py compiles it); cpu: one block per stage
    family_batch: int
    family_image: int
    family_steps: int  # timed training steps, each eager and compiled
    compiled_families: int  # how many of FAMILY_MODELS also compile
    compile_backend: str  # inductor generates kernels; eager only captures the graph
    parallel: bool  # compile the families in processes of their own, at once
    bench_models: tuple[str, ...]
    bench_batch: int
    bench_image: int  # 224: timm's Swin-T takes no other size
    bench_rounds: int
    bench_dtypes: tuple[str, ...]
    memory_batch: int | None  # None: the paper's batch per device
    pretrain: dict[str, Any]  # changes to the smoke profile's pretrain section for the pretrain part
    imagenet: dict[str, Any]  # changes to the smoke profile's generated ImageNet
    downstream_iters: int
    parts: tuple[str, ...]  # the parts run unless others are asked for


SIZES = {
    "cuda": Sizes(
        seca_batch=8, seca_images=(224, 232), dtype="bf16", family_kwargs={"drop_path_rate": 0.0}, family_batch=64, family_image=224, family_steps=10,
        compiled_families=len(FAMILY_MODELS), compile_backend="inductor", parallel=True,
        bench_models=("secvit_tiny", "secvit_small", "sec_swin_tiny", SWIN_T), bench_batch=64, bench_image=224, bench_rounds=5,
        bench_dtypes=("fp32", "bf16"), memory_batch=None,
        pretrain={"epochs": 1, "img_size": 224, "batch_size": 128, "amp_dtype": "bfloat16"}, imagenet={}, downstream_iters=20,
        parts=PARTS,
    ),
    "cpu": Sizes(
        seca_batch=1, seca_images=(64, 72), dtype="fp32", family_kwargs={"depths": (1, 1, 1, 1), "drop_path_rate": 0.0}, family_batch=2, family_image=32,
        family_steps=1, compiled_families=1, compile_backend="eager", parallel=False,
        bench_models=("secvit_tiny", SWIN_T), bench_batch=1, bench_image=224, bench_rounds=1, bench_dtypes=("fp32",),
        memory_batch=1, pretrain={"epochs": 1, "batch_size": 16},
        imagenet={"train_per_class": 8, "val_per_class": 4}, downstream_iters=1,
        parts=tuple(p for p in PARTS if p != "dense"),  # on request: the smoke DAG's tests run mmcv's CPU ops
    ),
}


@dataclass
class Check:
    part: str
    status: str  # pass, fail or skip
    detail: str
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status != FAIL


def _status(ok: bool) -> str:
    return PASS if ok else FAIL


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in fp32."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# ---- seca


def check_seca(device: str, sizes: Sizes) -> list[Check]:
    """seca_fast against seca_reference on the same inputs, forward and the gradient w.r.t. q, k and v, in fp32
    and in bf16 (both sides in bf16: the clusters come from the rounded keys, so they are the same clusters)."""
    checks = []
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        limit = SECA_LIMITS[dtype_name]
        for img in sizes.seca_images:
            start = time.perf_counter()
            worst_out = worst_grad = 0.0
            labels = []
            for shape in seca_shapes("secvit_small", img):
                if shape.clusters == 1:
                    continue  # global attention: no clustering to check
                gen = torch.Generator().manual_seed(shape.stage)
                qkv = torch.randn(sizes.seca_batch, shape.tokens, 3, shape.heads, shape.head_dim, generator=gen)
                qkv[:, :, 1] *= shape.head_dim**-0.5
                qkv = qkv.to(device=device, dtype=dtype).requires_grad_()
                fast = seca_fast(qkv, shape.clusters)
                ref = seca_reference(*unpack_qkv(qkv), shape.clusters).transpose(1, 2).reshape_as(fast)
                grad = torch.randn(fast.shape, generator=gen).to(device=device, dtype=dtype)
                (g_fast,) = torch.autograd.grad(fast, qkv, grad)
                (g_ref,) = torch.autograd.grad(ref, qkv, grad)
                worst_out = max(worst_out, _relative(fast, ref))
                worst_grad = max(worst_grad, _relative(g_fast, g_ref))
                labels.append(f"{shape.tokens}/{shape.clusters}")
            _sync(device)
            divisible = all(int(t) % int(c) == 0 for t, c in (label.split("/") for label in labels))
            checks.append(
                Check(
                    f"SECA fast vs reference, {dtype_name}, {img}x{img} ({'divisible' if divisible else 'non-divisible'})",
                    _status(worst_out < limit and worst_grad < limit),
                    f"tokens/clusters {', '.join(labels)}: max error / max abs value forward {worst_out:.1e}, backward "
                    f"{worst_grad:.1e} (limit {limit:.0e})",
                    time.perf_counter() - start,
                    {"dtype": dtype_name, "image": img, "forward_error": worst_out, "backward_error": worst_grad, "limit": limit},
                )
            )
    return checks


# ---- families


def _channels_last(device: str) -> torch.memory_format:
    return torch.channels_last if device == "cuda" else torch.contiguous_format  # the paper recipe's layout on GPUs


def _time_steps(step: Callable[[], Any], count: int, device: str) -> float:
    """Seconds per call of ``step`` over ``count`` calls (after the caller's warm-up)."""
    _sync(device)
    tic = time.perf_counter()
    for _ in range(count):
        step()
    _sync(device)
    return (time.perf_counter() - tic) / count


def family_figures(name: str, device: str, sizes: Sizes, compiled: bool, wait: Callable[[], None] = lambda: None,
                   timing: contextlib.AbstractContextManager | None = None) -> dict[str, Any]:
    """One family: forward passes (fp32 and bf16) and bf16 training steps, eager and (``compiled``) with
    ``torch.compile(fullgraph=True)``.

    Compiled and eager are compared on the fp32 logits: in bf16 SecViT's clusters come from rounded scores,
    which ties that another rounding breaks otherwise (at random weights the keys are alike), so bf16 logits of
    eager and compiled models legitimately differ by tens of percent; the first bf16 training loss is compared
    too. Everything that compiles runs first; then ``wait()`` (in parallel runs: until every family has
    compiled) and the timing inside ``timing`` (there: one family at a time)."""
    dtype = DTYPES[sizes.dtype]
    if compiled:  # afresh, as a training run compiles its one model: another family's compiles in this process
        torch._dynamo.reset()  # would recompile the shared code (symbolic shapes, then fullgraph's recompile limit)
    torch.manual_seed(0)
    built = create(name, num_classes=1000, **sizes.family_kwargs).to(device, memory_format=_channels_last(device))
    models = {"eager": built, **({"compiled": copy.deepcopy(built)} if compiled else {})}
    x = torch.randn(sizes.family_batch, 3, sizes.family_image, sizes.family_image, device=device)
    x = x.contiguous(memory_format=_channels_last(device))
    figures: dict[str, Any] = {"model": name, "dtype": sizes.dtype, "batch": sizes.family_batch, "image": sizes.family_image,
                               "options": sizes.family_kwargs}
    steps, logits, finite, losses = {}, {}, [], {}
    for mode, model in models.items():
        runnable = torch.compile(model, backend=sizes.compile_backend, fullgraph=True) if mode == "compiled" else model
        tic = time.perf_counter()
        logits[mode] = inference_step(runnable, x, None)().float()
        if dtype is not None:
            finite.append(torch.isfinite(inference_step(runnable, x, dtype)()).all().item())
        steps[mode] = training_step(runnable, x, dtype)
        losses[mode] = steps[mode]().item()  # the first step: compiles the training graph
        _sync(device)
        figures[f"{mode}_first_s"] = time.perf_counter() - tic  # compiled: the three graphs' compile time
        steps[mode]()  # warm-up
    figures["finite"] = all(finite) and all(math.isfinite(v) for v in losses.values()) and all(torch.isfinite(v).all().item() for v in logits.values())
    figures["loss"] = losses
    if compiled:
        figures["logits_difference"] = _relative(logits["compiled"], logits["eager"])
        figures["loss_difference"] = abs(losses["compiled"] - losses["eager"]) / max(abs(losses["eager"]), 1e-12)
    wait()
    with timing or contextlib.nullcontext():
        for mode, step in steps.items():
            figures[f"{mode}_step_ms"] = 1000 * _time_steps(step, sizes.family_steps, device)
    if device == "cuda":
        figures["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if compiled:
        figures["compiled_speedup"] = figures["eager_step_ms"] / figures["compiled_step_ms"]
    return figures


def _family_check(figures: dict[str, Any], sizes: Sizes, seconds: float) -> Check:
    name = figures["model"]
    compiled = "compiled_step_ms" in figures
    ok = figures["finite"] and (
        not compiled or (figures["logits_difference"] < COMPILE_LIMITS["logits"] and figures["loss_difference"] < COMPILE_LIMITS["loss"])
    )
    detail = f"{figures['dtype']}, batch {figures['batch']} at {figures['image']}: eager {figures['eager_step_ms']:.1f} ms/step"
    if compiled:
        detail += (
            f", compiled ({sizes.compile_backend}, fullgraph) {figures['compiled_step_ms']:.1f} ms/step = "
            f"{figures['compiled_speedup']:.2f}x after {figures['compiled_first_s']:.1f} s compiling; compiled vs eager: fp32 logits "
            f"{figures['logits_difference']:.1e} (limit {COMPILE_LIMITS['logits']:.0e}), first loss {figures['loss_difference']:.1e} "
            f"(limit {COMPILE_LIMITS['loss']:.0e})"
        )
    else:
        detail += "; not compiled at this size"
    if "peak_mib" in figures:
        detail += f"; peak {figures['peak_mib']:,.0f} MiB"
    depths = figures["options"].get("depths")
    options = f" ({'-'.join(map(str, depths))} blocks)" if depths else ""
    return Check(f"{name}{options}: {figures['dtype']} forward and training steps, eager{' and compiled' if compiled else ''}", _status(ok),
                 detail, seconds, figures)


def _family_worker(name: str, device: str, sizes: Sizes, compiled: bool, barrier: Any, lock: Any, results: Any) -> None:
    """A family's part in a process of its own (spawned): the result or the error goes to ``results``."""
    start = time.perf_counter()

    def wait() -> None:
        with contextlib.suppress(Exception):  # a family that failed or hangs must not hold the others: time anyway
            barrier.wait(timeout=600)

    try:
        figures = family_figures(name, device, sizes, compiled, wait=wait, timing=lock)
        results.put((name, figures, None, time.perf_counter() - start))
    except BaseException as e:  # noqa: BLE001 - reported in the table
        barrier.abort()
        results.put((name, None, _error(e), time.perf_counter() - start))


def _error(e: BaseException) -> str:
    message = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {message}"


def check_families(device: str, sizes: Sizes, progress: Progress | None = None) -> list[Check]:
    say = progress or (lambda message: None)
    compiled = {name: i < sizes.compiled_families for i, name in enumerate(FAMILY_MODELS)}
    if not sizes.parallel:
        checks = []
        for name in FAMILY_MODELS:
            say(f"families: {name}")
            start = time.perf_counter()
            try:
                checks.append(_family_check(family_figures(name, device, sizes, compiled[name]), sizes, time.perf_counter() - start))
            except Exception as e:  # noqa: BLE001 - the table reports it; the next family still runs
                checks.append(Check(f"{name}: {sizes.dtype} forward and training steps", FAIL, _error(e), time.perf_counter() - start))
        return checks
    ctx = mp.get_context("spawn")  # CUDA in each process: no fork
    barrier, lock, results = ctx.Barrier(len(FAMILY_MODELS)), ctx.Lock(), ctx.Queue()
    workers = {
        name: ctx.Process(target=_family_worker, args=(name, device, sizes, compiled[name], barrier, lock, results), daemon=True)
        for name in FAMILY_MODELS
    }
    for worker in workers.values():
        worker.start()
    say(f"families: compiling {len(workers)} models at once")
    done: dict[str, Check] = {}
    deadline = time.perf_counter() + 900
    while len(done) < len(workers) and time.perf_counter() < deadline:
        try:
            name, figures, error, seconds = results.get(timeout=5)
        except queues.Empty:
            for name, worker in workers.items():  # a process that died without a word (killed, out of memory)
                if name not in done and not worker.is_alive() and worker.exitcode not in (0, None):
                    done[name] = Check(f"{name}: {sizes.dtype} forward and training steps", FAIL, f"the process died (exit code {worker.exitcode})", 0.0)
            continue
        say(f"families: {name} done")
        done[name] = (
            Check(f"{name}: {sizes.dtype} forward and training steps", FAIL, error, seconds) if error else _family_check(figures, sizes, seconds)
        )
    for name, worker in workers.items():
        worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
        done.setdefault(name, Check(f"{name}: {sizes.dtype} forward and training steps", FAIL, "no result within 900 s", 900.0))
    return [done[name] for name in FAMILY_MODELS]


# ---- throughput and memory


def paper_throughput(model: str) -> float | None:
    """Table 2's throughput (A100, batch 64) of ``model``, if the paper prints one (Swin-T: its baseline row)."""

    if model == SWIN_T:
        rows = [row for _, row in load_paper_tables()["table2"].iter_rows() if row.get("model") == "Swin-T"]
        return float(rows[0]["throughput"]) if rows and rows[0].get("throughput") is not None else None
    with contextlib.suppress(ValueError):  # not one of our models
        value = paper_value("table2", model, "throughput")
        return float(value) if value is not None else None
    return None


def check_throughput(device: str, sizes: Sizes, progress: Progress | None) -> Check:
    start = time.perf_counter()
    result = bench_models(
        list(sizes.bench_models), batch=sizes.bench_batch, device=device, img_size=sizes.bench_image, rounds=sizes.bench_rounds,
        dtypes=sizes.bench_dtypes, modes=("inference",), baseline=SWIN_T, progress=progress,
    )
    cells, figures = [], {"batch": sizes.bench_batch, "image": sizes.bench_image, "models": {}}
    paper_swin = paper_throughput(SWIN_T)
    for name, measured in result["models"].items():
        paper = paper_throughput(name)
        row = {"paper_a100_img_per_s": paper, "paper_ratio": paper / paper_swin if paper and paper_swin else None}
        parts = []
        for dtype in sizes.bench_dtypes:
            f = measured[f"inference_{dtype}"]
            ratio = result["ratio_vs_baseline"].get(name, {}).get(f"inference_{dtype}")
            row[dtype] = {"img_per_s": f["img_per_s"], "ratio_vs_swin_t": ratio, "peak_memory_mb": f["peak_memory_mb"]}
            parts.append(f"{dtype} {f['img_per_s']:,.1f} img/s ({ratio:.2f}x)")
        figures["models"][name] = row
        paper_text = f"; paper (A100) {paper:,.0f} img/s ({row['paper_ratio']:.2f}x)" if paper else ""
        cells.append(f"{name}: " + ", ".join(parts) + paper_text)
    ok = all(f["img_per_s"] > 0 for m in result["models"].values() for k, f in m.items() if k != "params")
    return Check(
        f"throughput vs Swin-T, inference, batch {sizes.bench_batch} at {sizes.bench_image} (table 2's setting)",
        _status(ok), "; ".join(cells), time.perf_counter() - start, figures,
    )


def paper_batch_per_device(params: Path) -> int:
    return int(profile_section(load_params(params), "paper", "pretrain_speed")["batch_per_device"])


def check_memory(device: str, sizes: Sizes, params: Path, progress: Progress | None) -> Check:
    start = time.perf_counter()
    batch = sizes.memory_batch or paper_batch_per_device(params)
    result = bench_models(
        list(sizes.bench_models), batch=batch, device=device, img_size=sizes.bench_image, rounds=1, dtypes=(sizes.dtype,),
        modes=("training",), baseline=SWIN_T, progress=progress,
    )
    figures: dict[str, Any] = {"batch": batch, "image": sizes.bench_image, "models": {}}
    cells = []
    for name, measured in result["models"].items():
        f = measured[f"training_{sizes.dtype}"]
        per_image = f["peak_memory_mb"] / batch
        figures["models"][name] = {"peak_memory_mb": f["peak_memory_mb"], "mib_per_image": per_image, "img_per_s": f["img_per_s"]}
        cells.append(f"{name}: {per_image:,.1f} MiB/image ({f['peak_memory_mb']:,.0f} MiB), {f['img_per_s']:,.1f} img/s")
    return Check(
        f"peak memory of a {sizes.dtype} training step at batch {batch} per device, {sizes.bench_image}px", PASS, "; ".join(cells),
        time.perf_counter() - start, figures,
    )


# ---- pretrain


def _cli() -> list[str]:
    """How to start the ``secvit`` command line with this interpreter (installed or not)."""
    return [sys.executable, "-m", "secvit.cli.main"]


def check_pretrain(device: str, sizes: Sizes, params: Path, work: Path) -> Check:
    """``secvit pretrain --profile smoke --model secvit_tiny --device <device>`` in a scratch project: the smoke
    profile with ``sizes.pretrain``'s changes, on ImageNet generated as the smoke profile does it."""

    start = time.perf_counter()
    project = work / "pretrain"
    project.mkdir(parents=True)
    settings = load_params(params)
    smoke = settings["smoke"]
    smoke["pretrain"] = {**smoke["pretrain"], **sizes.pretrain}
    generate = {**smoke["data"]["generate"]["imagenet"], **sizes.imagenet}
    smoke["data"]["generate"]["imagenet"] = generate
    (project / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    counts = make_imagenet(project / smoke["data"]["imagenet"], **generate)
    command = [*_cli(), "pretrain", "--profile", "smoke", "--model", "secvit_tiny", "--device", device, "--executor", "local"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")} if device == "cuda" else dict(os.environ)
    began = time.perf_counter()
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
    ran = time.perf_counter() - began
    metrics_file = project / "results/smoke/pretrain/secvit_tiny/metrics.json"
    if result.returncode != 0 or not metrics_file.is_file():
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])[-400:]
        return Check("pretraining through the real stage", FAIL, f"exit {result.returncode}: {tail}", time.perf_counter() - start)

    metrics = json.loads(metrics_file.read_text())
    last = project / "runs/smoke/pretrain/secvit_tiny/last.pth"
    steps = metrics["epochs"] * (counts["train"] // metrics["global_batch"])
    figures = {
        "steps": steps, "global_batch": metrics["global_batch"], "micro_batch": metrics["micro_batch"], "img_size": smoke["pretrain"]["img_size"],
        "train_loss": metrics["train_loss"], "top1": metrics["best_top1"], "images_per_s": metrics["train_images_per_s"], "seconds": ran,
    }
    ok = math.isfinite(metrics["train_loss"]) and last.is_file() and (project / "runs/smoke/pretrain/secvit_tiny/best.pth").is_file()
    return Check(
        f"{steps} pretraining steps through the real stage (secvit pretrain --device {device}), secvit_tiny",
        _status(ok),
        f"{metrics['epochs']} epoch of {counts['train']} images, global batch {metrics['global_batch']} in micro-batches of "
        f"{metrics['micro_batch']} at {figures['img_size']}px, {smoke['pretrain'].get('amp_dtype') or 'fp32'}: loss "
        f"{metrics['train_loss']:.3f}, {metrics['train_images_per_s']:,.1f} img/s, val top-1 {metrics['best_top1']:.1f}; "
        f"checkpoints written; {ran:.1f} s with start-up",
        time.perf_counter() - start,
        figures,
    )


# ---- dense


def dense_unavailable(device: str) -> str | None:
    """Why the dense checks cannot run here (no mmcv, or no mmcv ops for the device), or None."""
    report = mmcv_report()
    if report.problem:
        return f"no mmcv with compiled ops ({report.problem.split(' (')[0]})"
    if device == "cuda":
        return mmcv_problem(report, cuda_report().gpus)
    return None


def _downstream(task: str, device: str, iters: int, params: Path, work: Path) -> Check:
    """``iters`` training iterations of Mask R-CNN (detection) or UperNet (segmentation) with a
    secvit_tiny backbone, on data generated as the smoke profile generates it."""
    from mmengine.runner import Runner  # heavy: mmengine, loaded for this part only

    import secvit.downstream.backbone  # noqa: F401  (registers the backbone, hooks and file backend)
    import secvit.downstream.hooks  # noqa: F401

    start = time.perf_counter()
    smoke = data_config(params, "smoke").generate or {}
    overrides = load_overrides(params, "smoke", task)
    batch = overrides.batch_per_device or 2
    if task == "detection":
        root = work / "coco"
        make_coco(root, **{**smoke.get("coco", {}), "train_images": batch * iters, "val_images": 2})
        config, swapped = config_file(DETECTION_CONFIGS[("mask_rcnn", "1x")], "secvit_tiny")
        length, classes, data_root, name = 1, coco_classes(root), root, "Mask R-CNN 1x"
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
        _status(done == iters and on == device and math.isfinite(loss)),
        f"{done} iterations on {on} in {trained:.1f} s ({trained / max(done, 1):.2f} s/iter), last loss {loss:.3f}; test: {shown}",
        time.perf_counter() - start,
        {"iterations": done, "seconds_per_iteration": trained / max(done, 1), "loss": loss, "metrics": metrics},
    )


# ---- the whole check


def run_checks(device: str, params: Path, progress: Progress | None = None, parts: tuple[str, ...] | None = None) -> list[Check]:
    """The chosen ``parts`` of the GPU check (default: the device's :attr:`Sizes.parts`) on ``device`` (cuda: real
    sizes; cpu: tiny ones), in order.

    A part that raises is recorded as failed with its error, and the others still run.
    """
    if device not in SIZES:
        raise SecvitError(f"--device must be one of {', '.join(SIZES)}, got {device!r}")
    parts = parts or SIZES[device].parts
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SecvitError(f"unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    if device == "cuda":
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
            checks.append(Check(part, FAIL, _error(e), time.perf_counter() - start))
            return
        checks.extend(result if isinstance(result, list) else [result])

    with tempfile.TemporaryDirectory(prefix="secvit-gpu-check-") as tmp:
        work = Path(tmp)
        if "seca" in parts:
            attempt("SECA fast vs reference", lambda: check_seca(device, sizes))
        if "families" in parts:
            attempt("families", lambda: check_families(device, sizes, progress))
        if "throughput" in parts:
            attempt("throughput vs Swin-T", lambda: check_throughput(device, sizes, progress))
        if "memory" in parts:
            attempt("peak memory per image", lambda: check_memory(device, sizes, params, progress))
        if "pretrain" in parts:
            attempt("pretraining through the real stage", lambda: check_pretrain(device, sizes, params, work))
        if "dense" in parts:
            why = dense_unavailable(device)
            if why:
                checks.append(Check("Mask R-CNN and UperNet iterations", SKIP, why, 0.0))
            else:
                torch.manual_seed(0)
                attempt("Mask R-CNN", lambda: _downstream("detection", device, sizes.downstream_iters, params, work))
                attempt("UperNet", lambda: _downstream("segmentation", device, sizes.downstream_iters, params, work))
    return checks


def check_report(checks: list[Check], device: str, command: str) -> dict[str, Any]:
    """The JSON record of a run: where (environment, CUDA, the way it was installed), what passed, every figure."""

    cuda = cuda_report()
    return {
        "device": device,
        "passed": all(c.passed for c in checks),
        "command": command,
        "mode": os.environ.get("SECVIT_GPU_CHECK_MODE", "project"),
        "lock": lock_in_use() if os.environ.get("SECVIT_GPU_CHECK_MODE", "project") == "project" else None,
        "environment": {**environment(device), "torch_cuda": cuda.torch_cuda, "driver": cuda.driver, "driver_cuda": cuda.driver_cuda},
        "checks": [{**asdict(c), "seconds": round(c.seconds, 2)} for c in checks],
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as one markdown table, under a line saying where it ran."""

    mode = report["mode"] + (f", {report['lock']}" if report.get("lock") else "")
    lines = [
        f"GPU check on {report['device']} ({mode}): " + env_line(report),
        "",
        "| part | result | s | detail |",
        "|---|---|---:|---|",
    ]
    for check in report["checks"]:
        lines.append(f"| {check['part']} | {check['status']} | {check['seconds']:.1f} | {check['detail'].replace('|', '/')} |")
    passed = sum(c["status"] == PASS for c in report["checks"])
    skipped = sum(c["status"] == SKIP for c in report["checks"])
    lines += ["", f"{passed} passed, {len(report['checks']) - passed - skipped} failed, {skipped} skipped"]
    return "\n".join(lines) + "\n"


