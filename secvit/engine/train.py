"""ImageNet pretraining, laid out like DeiT's engine: :func:`train_one_epoch` (the step loop),
:func:`evaluate_epoch`, the checkpoint helpers, and :func:`pretrain`, the loop around them
(for each epoch: train one epoch, evaluate, save best.pth and last.pth, log).

Resumable at any checkpoint: while the run trains, the run directory's ``last.pth`` holds
the model, EMA, optimizer and scheduler state, the position inside the epoch and the
metric history; once it has finished, only its record (position, history, settings). All randomness (sample order, augmentation, Mixup/CutMix, drop
path) is derived from (seed, epoch, sample or step), so a run that is killed and
resumed ends with exactly the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from secvit.atomic import own_copy, write_json
from secvit.checkpoint import atomic_save, load_file_checked
from secvit.data.imagenet import log_skips, read_skips
from secvit.data.layout import check_imagenet
from secvit.engine import live
from secvit.engine.config import SPEED_SETTINGS, PretrainConfig
from secvit.engine.distributed import DistEnv, Stopped, barrier, hostnames, init_distributed, listen_for_stop, stop_requested, stop_signal_name
from secvit.engine.amp import autocast, recipe_dtype
from secvit.engine.evaluate import evaluate
from secvit.engine.loaders import build_eval_loader, build_train_loader, derived_seed, seed_everything, set_epoch
from secvit.errors import SecvitError
from secvit.models.registry import create
from secvit.provenance import code_version
from secvit.runs import BEST, CURVES, LAST, METRICS

console = Console(stderr=True)


@dataclass(frozen=True)
class RunDir:
    """Files of one training run: checkpoints under ``root``, metrics and curves under ``results``."""

    root: Path
    results: Path

    @property
    def last(self) -> Path:
        return self.root / LAST

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def metrics(self) -> Path:
        return self.results / METRICS

    @property
    def live(self) -> Path:
        return self.results / CURVES

    @property
    def skips(self) -> Path:
        return self.root / "skipped_images.tsv"


def summarize(history: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """The run's metrics: best top-1 over epochs taking the better of raw and EMA (the paper's
    convention), and the final epoch's figures."""
    best, best_epoch, best_weights, best_top5 = -1.0, None, None, None
    for row in history:
        for weights in ("raw", "ema"):
            top1 = row.get(f"{weights}_top1")
            if top1 is not None and top1 > best:
                best, best_epoch, best_weights, best_top5 = top1, row["epoch"], weights, row[f"{weights}_top5"]
    last = history[-1] if history else {}
    return {
        **extra,
        "epochs": len(history),
        "best_top1": best if history else None,
        "best_top5": best_top5,
        "best_epoch": best_epoch,
        "best_weights": best_weights,
        "final_top1": last.get("raw_top1"),
        "final_top5": last.get("raw_top5"),
        "final_top1_ema": last.get("ema_top1"),
        "final_top5_ema": last.get("ema_top5"),
        "train_loss": last.get("train_loss"),
        "train_images_per_s": last.get("images_per_s"),
    }


@dataclass
class Training:
    """What the loop trains: the model (and its DDP wrapper), EMA, optimizer, schedule and loss."""

    model: nn.Module  # the bare model: its state_dict is what checkpoints hold
    train_model: nn.Module  # the model, wrapped in DistributedDataParallel when distributed
    ema: ModelEmaV3 | None
    optimizer: Any
    scheduler: Any
    mixup: Mixup | None
    criterion: nn.Module


@dataclass
class Position:
    """Where the run is: the next epoch and batch, the finished epochs' rows, and the running
    sums of the current epoch. Saved in ``last.pth``; restored on resume."""

    epoch: int = 0
    batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=lambda: {"loss_sum": 0.0, "batches": 0, "seconds": 0.0})


def apply_speed_options(model: nn.Module, cfg: PretrainConfig, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` with the recipe's memory layout and gradient checkpointing."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def build_optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer (AdamW), with the fused kernel if ``cfg.fused_optimizer``."""
    extra = {"fused": True} if cfg.fused_optimizer else {}
    return create_optimizer_v2(
        model,
        opt=cfg.opt,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        eps=cfg.opt_eps,
        betas=tuple(cfg.opt_betas),
        filter_bias_and_bn=cfg.no_decay_bias_norm,
        **extra,
    )


def build_training(model_name: str, cfg: PretrainConfig, num_classes: int, env: DistEnv, model_kwargs: dict[str, Any]) -> Training:
    """Model (same initial weights on every rank), EMA, optimizer, schedule, Mixup/CutMix and loss of the recipe."""
    seed_everything(cfg.seed)  # identical initial weights on every rank
    model = create(model_name, num_classes=num_classes, drop_path_rate=cfg.drop_path, **model_kwargs)
    if cfg.sync_bn and env.distributed and env.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    apply_speed_options(model, cfg, env.device)
    ema = ModelEmaV3(model, decay=cfg.ema_decay_per_step) if cfg.ema else None
    optimizer = build_optimizer(model, cfg)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr
    )
    mixup = None
    if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup_alpha,
            cutmix_alpha=cfg.cutmix_alpha,
            prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob,
            mode=cfg.mixup_mode,
            label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )
        if cfg.batch_per_device % 2:
            raise SecvitError("Mixup/CutMix needs an even batch_per_device")
    criterion = SoftTargetCrossEntropy() if mixup else LabelSmoothingCrossEntropy(cfg.smoothing) if cfg.smoothing else nn.CrossEntropyLoss()
    return Training(model, model, ema, optimizer, scheduler, mixup, criterion)  # DDP wraps it after resume


def schedule_epoch(epoch: int) -> int:
    """The point of the lr schedule that epoch ``epoch`` (from 0) trains at. The release (DeiT's
    ``main.py``) steps the schedule after each epoch, ``lr_scheduler.step(epoch)``: epoch 0 trains at the
    value the scheduler set when it was built (its start, the warmup lr), epoch ``e`` at the value for
    ``e - 1``, so epochs 0 and 1 both train at the start value."""
    return max(epoch - 1, 0)


# Settings that do not change the results (speed, memory): a checkpoint written with other values resumes.
RESUMABLE_CHANGES = frozenset(SPEED_SETTINGS)


def changed_settings(saved: dict[str, Any] | None, cfg: PretrainConfig) -> list[str]:
    """The recipe settings (besides :data:`RESUMABLE_CHANGES`) in which ``saved`` differs from ``cfg``."""
    current = cfg.to_dict()
    saved = saved or {}
    return sorted(k for k in current.keys() | saved.keys() if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k))


def layout(cfg: PretrainConfig, env: DistEnv) -> dict[str, int]:
    """How the global batch is split on this run's devices (saved in ``last.pth``)."""
    micro, accum = cfg.micro_batch(env.world_size)
    return {"world_size": env.world_size, "micro_batch": micro, "accumulation": accum}


def _either(values: list[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def resumed_batch(state: dict[str, Any], cfg: PretrainConfig, env: DistEnv, path: Path) -> int:
    """The position inside the epoch, in this run's batches, of a checkpoint written on another device count
    or with another ``batch_per_device`` (checkpoints are written after whole optimizer steps).

    Each optimizer step trains on the same images in the same micro-batches on any device count with
    the same micro-batch (:class:`secvit.engine.loaders.GlobalBatchShare`), so such a run continues
    exactly; on another device count another micro-batch would change what the rest of the run
    computes: refused. On the same devices, a new ``batch_per_device`` (a speed option) continues."""
    saved = state.get("layout") or {"world_size": 1, **dict(zip(("micro_batch", "accumulation"), cfg.micro_batch(1)))}
    now = layout(cfg, env)
    if saved == now:
        return state["batch"]
    if saved["micro_batch"] != now["micro_batch"] and saved["world_size"] == now["world_size"]:
        # batch_per_device, a speed option, changed on the same devices: the run goes on with the same recipe
        # from the next optimizer step, in micro-batches of the new size (not bit for bit: BatchNorm statistics
        # and the random draws follow the micro-batch)
        console.log(f"{path}: micro-batches of {saved['micro_batch']} before, {now['micro_batch']} from here on (batch_per_device)")
    elif saved["micro_batch"] != now["micro_batch"]:
        same = [n for n in range(1, cfg.batch_size + 1) if cfg.batch_size % n == 0 and cfg.micro_batch(n)[0] == saved["micro_batch"]]
        raise SecvitError(
            f"{path} was trained on {saved['world_size']} devices in micro-batches of {saved['micro_batch']}; on {env.world_size} "
            f"they would be {now['micro_batch']}, which changes the run: resume on {_either(same)} devices, or remove it to start over"
        )
    return state["batch"] // saved["accumulation"] * now["accumulation"]


def resume(run: RunDir, training: Training, identity: dict[str, Any], cfg: PretrainConfig | None = None, env: DistEnv | None = None) -> Position:
    """Load ``last.pth`` into ``training`` and return its position; a fresh position without one.

    ``identity`` (model name, classes, architecture overrides) must match the checkpoint's. With
    ``cfg``, a checkpoint of another recipe (e.g. a DVC experiment that changed the learning rate)
    is not resumed: the run starts over and replaces it.
    """
    if not run.last.exists():
        return Position()
    state = load_file_checked(run.last)
    if {key: state.get(key) for key in identity} != identity:
        raise SecvitError(f"{run.last} belongs to another run ({state.get('model_name')}); remove {run.root} to start over")
    changed = changed_settings(state.get("config"), cfg) if cfg is not None else []
    if changed:
        console.log(f"{run.last} was trained with other settings ({', '.join(changed)}): starting over")
        return Position()
    if state["model"] is None:  # a finished run's last.pth is its record only: nothing is left to train
        return Position(state["epoch"], state["batch"], state["history"], state["partial"])
    batch = resumed_batch(state, cfg, env, run.last) if cfg is not None and env is not None else state["batch"]
    training.model.load_state_dict(state["model"])
    if training.ema is not None:
        training.ema.module.load_state_dict(state["model_ema"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    return Position(state["epoch"], batch, state["history"], state["partial"])


def save_last(run: RunDir, training: Training, position: Position, identity: dict[str, Any], cfg: PretrainConfig, env: DistEnv) -> None:
    """Write ``last.pth`` (main process, atomically) at ``position``; every rank waits for it.

    A checkpoint keeps what resuming needs and nothing more: once the run has trained every epoch,
    nothing is left to resume, and ``last.pth`` becomes the run's record (identity, position, history,
    settings) without weights or optimizer state; ``best.pth`` holds the weights the paper reports."""
    if env.is_main:
        ema = training.ema
        running = not (position.epoch >= cfg.epochs and position.batch == 0)
        atomic_save(
            {
                **identity,
                "model": training.model.state_dict() if running else None,
                "model_ema": ema.module.state_dict() if running and ema is not None else None,
                "optimizer": training.optimizer.state_dict() if running else None,
                "scheduler": training.scheduler.state_dict() if running else None,
                "epoch": position.epoch,
                "batch": position.batch,
                "history": position.history,
                "partial": position.partial,
                "config": cfg.to_dict(),
                "layout": layout(cfg, env),
            },
            run.last,
        )
    barrier()


def seed_micro_batch(cfg: PretrainConfig, env: DistEnv, epoch: int, batch: int, accum: int) -> None:
    """Seed Mixup/CutMix and drop path of this device's micro-batch ``batch`` of epoch ``epoch`` by the
    micro-batch's place in the epoch (its optimizer step, and its slot among the step's micro-batches as
    :class:`~secvit.engine.loaders.GlobalBatchShare` deals them): the same draws on any device count."""
    slot = batch // accum * env.world_size * accum + env.rank * accum + batch % accum
    seed_everything(derived_seed(cfg.seed, 0, epoch, slot))


def train_one_epoch(
    training: Training,
    loader: Any,
    epoch: int,
    position: Position,
    batches: int,
    accum: int,
    cfg: PretrainConfig,
    env: DistEnv,
    checkpoint: Callable[[int], None],
    on_batch: Callable[[], None] = lambda: None,
) -> None:
    """One epoch from batch ``position.batch`` to ``batches``, with an optimizer step every ``accum`` batches.

    Adds the loss, batch count and seconds to ``position.partial``; calls ``checkpoint(done)``
    every ``cfg.checkpoint_every_steps`` optimizer steps inside the epoch (done = batches
    finished) and ``on_batch()`` after every batch. When a stop was requested (:func:`~secvit.engine.distributed.stop_requested`,
    SLURM's pre-timeout signal), saves a checkpoint after the step in flight and raises
    :class:`~secvit.engine.Stopped`.
    """
    model, train_model, partial = training.model, training.train_model, position.partial
    set_epoch(loader, epoch, skip_batches=position.batch)
    train_model.train()
    tic = time.perf_counter()
    for batch, (images, targets) in enumerate(loader, start=position.batch):
        if batch >= batches:
            break
        seed_micro_batch(cfg, env, epoch, batch, accum)
        images, targets = images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if training.mixup is not None:
            images, targets = training.mixup(images, targets)

        boundary = (batch + 1) % accum == 0  # the last batch of an optimizer step
        sync = nullcontext() if boundary or not env.distributed else train_model.no_sync()
        with sync:
            with autocast(env.device, recipe_dtype(cfg.amp_dtype, env.device)):
                loss = training.criterion(train_model(images), targets)
            (loss / accum).backward()
        if not math.isfinite(loss.item()):
            raise SecvitError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {batch}; lower the learning rate")
        partial["loss_sum"] += loss.item()
        partial["batches"] += 1

        if boundary:
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            training.optimizer.step()
            training.optimizer.zero_grad(set_to_none=True)
            if training.ema is not None:
                training.ema.update(model)
            done = batch + 1
            if done < batches and stop_requested(env.device):
                partial["seconds"] += time.perf_counter() - tic
                checkpoint(done)
                raise Stopped(f"epoch {epoch + 1}, batch {done}")
            if cfg.checkpoint_every_steps and (done // accum) % cfg.checkpoint_every_steps == 0 and done < batches:
                partial["seconds"] += time.perf_counter() - tic
                tic = time.perf_counter()
                checkpoint(done)
        on_batch()
    partial["seconds"] += time.perf_counter() - tic


def evaluate_epoch(training: Training, loader: Any, env: DistEnv, amp_dtype: str | None) -> dict[str, float]:
    """Top-1/top-5 of the raw and (if any) EMA weights: ``raw_top1``, ``raw_top5``, ``ema_top1``, ``ema_top5``."""
    raw = evaluate(training.model, loader, env, amp_dtype)
    row = {"raw_top1": raw["top1"], "raw_top5": raw["top5"]}
    if training.ema is not None:
        ema = evaluate(training.ema.module, loader, env, amp_dtype)
        row.update(ema_top1=ema["top1"], ema_top5=ema["top5"])
    return row


def save_best(run: RunDir, training: Training, metrics: dict[str, Any], model_name: str) -> None:
    """Write ``best.pth``: the better of raw and EMA weights of the best epoch (the paper's convention)."""
    weights = training.ema.module if metrics["best_weights"] == "ema" else training.model
    state = {"model": weights.state_dict(), "model_name": model_name, "epoch": metrics["best_epoch"], "top1": metrics["best_top1"], "weights": metrics["best_weights"]}
    atomic_save(state, run.best)


def run_metrics(run: RunDir, history: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """:func:`summarize` plus the number of images skipped as unreadable."""
    metrics = summarize(history, extra)
    metrics["skipped_images"] = len(read_skips(run.skips))
    return metrics


def write_results(run: RunDir, metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """``metrics.json`` (with the version of the code that computed it) and the DVCLive curves (rewritten from
    the whole history)."""
    write_json(run.metrics, {**metrics, "code": code_version()})
    live.write_history(run.live, history)


def _progress(env: DistEnv) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
        console=console, disable=not env.is_main,
    )


def _report_stop(run: RunDir, stopped: Stopped, env: DistEnv) -> None:
    if env.is_main:
        console.log(f"stopped on request ({stop_signal_name()}): saved {run.last} at {stopped.message}; run again to resume")


def pretrain(
    model_name: str,
    cfg: PretrainConfig,
    data_root: Path,
    run_dir: Path,
    results_dir: Path | None = None,
    expected: dict | None = None,
    model_kwargs: dict[str, Any] | None = None,
    exclude: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on ImageNet at ``data_root``; resume from ``run_dir/last.pth`` if present.

    ``model_kwargs`` override the architecture (e.g. ``clusters`` for the table-7 sweep). ``exclude`` maps
    the images the data stage found bad (relative to ``data_root``) to their problems: left out, and logged
    with the images skipped as unreadable.
    Checkpoints go to ``run_dir``; ``metrics.json`` and the DVCLive curves to ``results_dir``
    (default: ``run_dir``).
    """
    env = init_distributed()
    listen_for_stop()  # SIGTERM, SIGUSR1, SIGUSR2 (SLURM's stop signals): checkpoint after the step in flight, exit
    run = RunDir(Path(run_dir), Path(results_dir or run_dir))
    num_classes = check_imagenet(data_root, expected=expected).classes
    micro, accum = cfg.micro_batch(env.world_size)
    run.root.mkdir(parents=True, exist_ok=True)
    run.results.mkdir(parents=True, exist_ok=True)
    model_kwargs = dict(model_kwargs or {})
    identity = {"model_name": model_name, "num_classes": num_classes, "model_kwargs": model_kwargs}

    training = build_training(model_name, cfg, num_classes, env, model_kwargs)
    position = resume(run, training, identity, cfg, env)
    resuming = position.epoch > 0 or position.batch > 0
    if resuming and env.is_main:
        console.log(f"resuming {model_name} from {run.last}: epoch {position.epoch + 1}, batch {position.batch}")
    if cfg.compile:
        training.train_model = torch.compile(training.model)
    if env.distributed:
        training.train_model = DistributedDataParallel(training.train_model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)

    if env.is_main:
        own_copy(run.skips)  # appended in place below; DVC may have linked it to its cache
        logged = {path for path, _ in read_skips(run.skips)}
        log_skips(run.skips, {p: f"left out: {why}" for rel, why in (exclude or {}).items() if (p := str(Path(data_root) / rel)) not in logged})
    barrier()
    train_loader = build_train_loader(Path(data_root), cfg, env, run.skips, exclude or {})
    val_loader = build_eval_loader(Path(data_root), cfg.img_size, cfg.eval_crop_pct, cfg.interpolation, cfg.batch_per_device, cfg.workers, env, run.skips, exclude or {})
    batches = len(train_loader.sampler.sampler) // micro  # whole global batches only (GlobalBatchShare)
    if batches < accum:
        raise SecvitError(f"an epoch of {len(train_loader.dataset)} images has no whole global batch of {cfg.batch_size}; lower batch_size")
    if training.mixup is not None and micro % 2:
        raise SecvitError(f"Mixup/CutMix needs an even micro-batch; {env.world_size} devices make it {micro}")

    if env.is_main:
        console.log(f"training {model_name} from epoch {position.epoch + 1}, batch {position.batch}: {batches} batches of {micro} per epoch")
    extra = {"model": model_name, **model_kwargs, "num_classes": num_classes, "world_size": env.world_size, "global_batch": cfg.batch_size, "micro_batch": micro, "accumulation": accum, "lr": cfg.lr,
             "hosts": hostnames()}
    with _progress(env) as progress:
        epochs_bar = progress.add_task(f"{model_name} epochs", total=cfg.epochs, completed=position.epoch, status="")
        batches_bar = progress.add_task("batches", total=batches, status="")
        for epoch in range(position.epoch, cfg.epochs):
            position.epoch = epoch
            training.scheduler.step(schedule_epoch(epoch))
            progress.reset(batches_bar, total=batches, completed=position.batch)

            def checkpoint(done: int) -> None:
                save_last(run, training, Position(epoch, done, position.history, position.partial), identity, cfg, env)

            def on_batch() -> None:
                progress.update(batches_bar, advance=1, status=f"loss {position.partial['loss_sum'] / position.partial['batches']:.4f}")

            try:
                train_one_epoch(training, train_loader, epoch, position, batches, accum, cfg, env, checkpoint, on_batch)
            except Stopped as stopped:
                _report_stop(run, stopped, env)
                raise

            partial = position.partial
            row = {
                "epoch": epoch + 1,
                "lr": training.optimizer.param_groups[0]["lr"],
                "train_loss": partial["loss_sum"] / max(partial["batches"], 1),
                "images_per_s": partial["batches"] * micro * env.world_size / max(partial["seconds"], 1e-9),
            }
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                row.update(evaluate_epoch(training, val_loader, env, cfg.amp_dtype))
            position.history.append(row)
            position.epoch, position.batch, position.partial = epoch + 1, 0, Position().partial

            metrics = run_metrics(run, position.history, extra)
            if env.is_main and metrics["best_epoch"] == epoch + 1:  # strictly better than every earlier epoch
                save_best(run, training, metrics, model_name)
            save_last(run, training, position, identity, cfg, env)
            if env.is_main:
                write_results(run, metrics, position.history)
                shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
                console.log(f"epoch {epoch + 1}/{cfg.epochs}: {shown}")
            progress.update(epochs_bar, advance=1, status=f"best top-1 {metrics['best_top1']:.2f}" if metrics["best_top1"] is not None else "")
            if epoch + 1 < cfg.epochs and stop_requested(env.device):
                stopped = Stopped(f"epoch {epoch + 2}, batch 0")
                _report_stop(run, stopped, env)
                raise stopped

    metrics = run_metrics(run, position.history, extra)
    if env.is_main:
        write_results(run, metrics, position.history)
        if metrics["skipped_images"]:
            console.log(f"[yellow]skipped {metrics['skipped_images']} unreadable images (listed in {run.skips})")
    return metrics
