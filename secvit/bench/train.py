"""``secvit bench train``: this device's rates for the cost plan (:mod:`secvit.cost`): training and evaluation
steps of a model with a profile's recipe on synthetic batches, evaluation at a second image size, a two-stage
detector's RoI heads, a checkpoint write and a stage process's start-up."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from secvit.bench import environment
from secvit.checkpoint import atomic_save
from secvit.complexity import count_flops
from secvit.cost.flops import FLOPS_CACHE, Flops
from secvit.cost.rates import Throughput
from secvit.engine.amp import autocast, recipe_dtype
from secvit.engine.config import pretrain_config
from secvit.engine.distributed import DistEnv
from secvit.engine.train import build_training
from secvit.errors import SecvitError
from secvit.models.registry import check_model
from secvit.params import load_params, profile_section

__all__ = ["CURVE_SIZE", "ROI_BATCH", "measure"]

#: The second image size at which evaluation is timed (the complexity stage's and table 2's), besides the
#: recipe's: :attr:`secvit.cost.rates.Throughput.eval_curve`.
CURVE_SIZE = 224


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc), or 0 where unknown."""
    try:
        import psutil  # optional: not every environment has it

        return time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - an estimate only
        return 0.0


def measure(profile: str, model: str, params_path: Path = Path("params.yaml"), steps: int = 6, warmup: int = 2,
            device: str | None = None) -> Throughput:
    """Time training and evaluation steps of ``model`` with the profile's recipe (image size, batch
    per device, optimizer, EMA, speed options) on synthetic batches, one checkpoint write, and this
    process's start-up (imports and model build); return the rates as a :class:`Throughput`."""
    check_model(model)
    if steps < 1 or warmup < 0:
        raise SecvitError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    params = load_params(params_path)
    own = model in (profile_section(params, profile, "pretrain_runs") or {})
    cfg = pretrain_config(params_path, profile, model if own else None)  # the model's run settings, if it has a run
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = DistEnv(0, 1, 0, dev)
    classes = 1000
    training = build_training(model, cfg, classes, env, {})
    # On a CPU, busy time: this process's CPU seconds over its threads, which is the wall time of an idle
    # machine whatever else runs beside the measurement (a GPU's work is not CPU time: wall time there)
    threads = torch.get_num_threads()
    clock = (lambda: time.process_time() / threads) if dev.type == "cpu" else time.perf_counter
    serial = time.process_time if dev.type == "cpu" else time.perf_counter  # for one-thread work (imports)
    startup = time.process_time() if dev.type == "cpu" else _process_age()  # imports and the model build
    batch = cfg.batch_per_device
    images = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=dev)
    targets = torch.randint(0, classes, (batch,), device=dev)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = recipe_dtype(cfg.amp_dtype, dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def train_step() -> None:
        with autocast(dev, dtype):
            loss = training.criterion(training.model(images), targets)
        loss.backward()
        training.optimizer.step()
        training.optimizer.zero_grad(set_to_none=True)
        if training.ema is not None:
            training.ema.update(training.model)

    def eval_step(batch_images: torch.Tensor) -> None:
        with torch.no_grad(), autocast(dev, dtype):
            training.model(batch_images)

    def images_per_s(step: Callable[[], None], count: int, warm: int, calls: int) -> float:
        """``count`` images per call of ``step``: ``warm`` calls untimed, then ``calls`` timed."""
        for _ in range(warm):
            step()
        sync()
        tic = clock()
        for _ in range(calls):
            step()
        sync()
        return calls * count / (clock() - tic)

    training.model.train()
    timings = {"train": images_per_s(train_step, batch, warmup, steps)}
    training.model.eval()
    timings["eval"] = images_per_s(lambda: eval_step(images), batch, warmup, steps)
    # evaluation at the complexity stage's size too (small images run far below a CPU's rate)
    flops_of = Flops(params_path.parent / FLOPS_CACHE)
    gflops, _ = flops_of(model, cfg.img_size)
    curve = [[gflops, timings["eval"] * gflops]]
    if cfg.img_size != CURVE_SIZE:
        large = torch.randn(min(batch, 8), 3, CURVE_SIZE, CURVE_SIZE, device=dev)
        if cfg.channels_last:
            large = large.contiguous(memory_format=torch.channels_last)
        large_gflops = flops_of(model, CURVE_SIZE)[0]
        curve.append([large_gflops, images_per_s(lambda: eval_step(large), len(large), 1, 2) * large_gflops])
    tic = serial()
    # timed: what a detection or segmentation stage imports besides ours (so imported here, not at the top)
    import mmdet.models  # noqa: F401
    import mmengine.runner  # noqa: F401
    import mmseg.models  # noqa: F401

    dense_startup = serial() - tic
    roi_gflops, roi_train_step, roi_eval_step = _roi_steps(dev, dtype)
    roi_rates = [images_per_s(step, ROI_BATCH, 1, 2) * roi_gflops for step in (roi_train_step, roi_eval_step)]
    flops_of.save()
    state = {"model": training.model.state_dict(), "model_ema": training.ema.module.state_dict() if training.ema else None,
             "optimizer": training.optimizer.state_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pth"
        tic = time.perf_counter()
        atomic_save(state, path)
        seconds = time.perf_counter() - tic
        size = path.stat().st_size
    host = environment(dev)
    name = host["device_name"] if dev.type == "cuda" else f"CPU {host['device_name']}, {host['threads']} threads"
    measured = {
        "device": str(dev), "model": model, "profile": profile, "img_size": cfg.img_size, "batch": batch, "steps": steps,
        "train_images_per_s": timings["train"], "eval_images_per_s": timings["eval"], "gflops_per_image": gflops,
        "checkpoint_bytes": size, "checkpoint_s": seconds, "startup_s": startup, "host": os.uname().nodename,
        "environment": host,
    }
    return Throughput(
        name, f"measured by `secvit bench train --profile {profile} --model {model}` ({steps} steps of batch {batch} at "
        f"{cfg.img_size}px, synthetic data" + ("; CPU busy time: an idle machine's wall time)" if dev.type == "cpu" else ")"),
        timings["train"] * gflops, timings["eval"] * gflops, startup, size / 1e9 / max(seconds, 1e-6), measured, curve, dense_startup,
        *roi_rates,
    )


#: RoIs per timed batch of the RoI-head rates (a stage's heads see 64-1000 at a time)
ROI_BATCH = 32


def _roi_steps(dev: Any, dtype: Any) -> tuple[float, Callable[[], None], Callable[[], None]]:
    """GFLOPs per RoI, a training step and an evaluation step of a two-stage detector's RoI heads on
    :data:`ROI_BATCH` RoIs: mmdet's FCN mask head (four 3x3 convolutions on 14x14 RoIs, the bulk of their work)."""
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead  # mmdet: imported (and timed) above

    head = FCNMaskHead(num_convs=4, in_channels=256, conv_out_channels=256, num_classes=80).to(dev)
    rois = torch.randn(ROI_BATCH, 256, 14, 14, device=dev)
    with torch.no_grad():
        gflops = count_flops(head.eval(), rois[:1])[0] / 1e9

    def train() -> None:
        head.train()
        with autocast(dev, dtype):
            loss = head(rois).float().square().mean()
        loss.backward()

    def evaluate() -> None:
        head.eval()
        with torch.no_grad(), autocast(dev, dtype):
            head(rois)

    return gflops, train, evaluate
