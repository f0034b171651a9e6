"""ImageNet pretraining: a plain loop you can read top to bottom.

Resumable at any checkpoint: the run directory's ``last.pth`` holds the model,
EMA, optimizer and scheduler state, the position inside the epoch and the
metric history. All randomness (sample order, augmentation, Mixup/CutMix, drop
path) is derived from (seed, epoch, sample or step), so a run that is killed and
resumed ends with exactly the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from secvit.atomic import write_json
from secvit.checkpoint import atomic_save, load_file_checked
from secvit.data.imagenet import read_skips
from secvit.data.layout import check_imagenet
from secvit.engine import live
from secvit.engine.config import PretrainConfig
from secvit.engine.distributed import barrier, init_distributed
from secvit.engine.evaluate import autocast, evaluate
from secvit.engine.loaders import build_eval_loader, build_train_loader, derived_seed, seed_everything, set_epoch
from secvit.errors import SecvitError
from secvit.models.registry import create

console = Console(stderr=True)


@dataclass(frozen=True)
class RunDir:
    """Files of one training run: checkpoints under ``root``, metrics and curves under ``results``."""

    root: Path
    results: Path

    @property
    def last(self) -> Path:
        return self.root / "last.pth"

    @property
    def best(self) -> Path:
        return self.root / "best.pth"

    @property
    def metrics(self) -> Path:
        return self.results / "metrics.json"

    @property
    def live(self) -> Path:
        return self.results / "dvclive"

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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def pretrain(
    model_name: str,
    cfg: PretrainConfig,
    data_root: Path,
    run_dir: Path,
    results_dir: Path | None = None,
    expected: dict | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on ImageNet at ``data_root``; resume from ``run_dir/last.pth`` if present.

    ``model_kwargs`` override the architecture (e.g. ``clusters`` for the table-7 sweep).
    Checkpoints go to ``run_dir``; ``metrics.json`` and the DVCLive curves to ``results_dir``
    (default: ``run_dir``).
    """
    env = init_distributed()
    run = RunDir(Path(run_dir), Path(results_dir or run_dir))
    counts = check_imagenet(data_root, expected=expected)
    num_classes = counts.classes
    accum = cfg.accumulation(env.world_size)
    run.root.mkdir(parents=True, exist_ok=True)
    run.results.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    model_kwargs = dict(model_kwargs or {})
    model = create(model_name, num_classes=num_classes, drop_path_rate=cfg.drop_path_for(model_name), **model_kwargs)
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

    # ---- resume
    start_epoch, start_batch, history, partial = 0, 0, [], {"loss_sum": 0.0, "batches": 0, "seconds": 0.0}
    if run.last.exists():
        state = load_file_checked(run.last, full=True)
        if (state.get("model_name"), state.get("num_classes"), state.get("model_kwargs")) != (model_name, num_classes, model_kwargs):
            raise SecvitError(f"{run.last} belongs to another run ({state.get('model_name')}); remove {run.root} to start over")
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.module.load_state_dict(state["model_ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, start_batch, history, partial = state["epoch"], state["batch"], state["history"], state["partial"]
        if env.is_main:
            console.log(f"resuming {model_name} from {run.last}: epoch {start_epoch + 1}, batch {start_batch}")

    compiled = torch.compile(model) if cfg.compile else model
    train_model = DistributedDataParallel(compiled, device_ids=[env.local_rank] if env.device.type == "cuda" else None) if env.distributed else compiled
    train_loader = build_train_loader(Path(data_root), cfg, env, run.skips)
    val_loader = build_eval_loader(Path(data_root), cfg.img_size, cfg.eval_crop_pct, cfg.interpolation, cfg.batch_per_device, cfg.workers, env, run.skips)
    batches_per_epoch = len(train_loader.sampler.sampler) // cfg.batch_per_device
    if batches_per_epoch < accum:
        raise SecvitError(f"an epoch has {batches_per_epoch} batches of {cfg.batch_per_device}, fewer than one optimizer step ({accum}); lower batch_size")
    batches_per_epoch -= batches_per_epoch % accum  # whole optimizer steps only

    def save_last(epoch: int, batch: int) -> None:
        if env.is_main:
            atomic_save(
                {
                    "model_name": model_name,
                    "num_classes": num_classes,
                    "model_kwargs": model_kwargs,
                    "model": model.state_dict(),
                    "model_ema": ema.module.state_dict() if ema is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "batch": batch,
                    "history": history,
                    "partial": partial,
                    "config": cfg.to_dict(),
                },
                run.last,
            )
        barrier()

    extra = {"model": model_name, **model_kwargs, "num_classes": num_classes, "world_size": env.world_size, "global_batch": cfg.batch_size, "accumulation": accum, "lr": cfg.lr}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
        console=console, disable=not env.is_main,
    )
    with progress:
        epochs_task = progress.add_task(f"{model_name} epochs", total=cfg.epochs, completed=start_epoch, status="")
        batch_task = progress.add_task("batches", total=batches_per_epoch, status="")
        for epoch in range(start_epoch, cfg.epochs):
            scheduler.step(epoch)
            set_epoch(train_loader, epoch, skip_batches=start_batch)
            train_model.train()
            progress.reset(batch_task, total=batches_per_epoch, completed=start_batch)
            tic = time.perf_counter()
            for batch, (images, targets) in enumerate(train_loader, start=start_batch):
                if batch >= batches_per_epoch:
                    break
                seed_everything(derived_seed(cfg.seed, env.rank, epoch, batch))  # Mixup/CutMix, drop path
                images, targets = images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True)
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                if mixup is not None:
                    images, targets = mixup(images, targets)
                boundary = (batch + 1) % accum == 0
                sync = nullcontext() if boundary or not env.distributed else train_model.no_sync()
                with sync:
                    with autocast(env, cfg.amp_dtype):
                        loss = criterion(train_model(images), targets)
                    (loss / accum).backward()
                if not math.isfinite(loss.item()):
                    raise SecvitError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {batch}; lower the learning rate")
                partial["loss_sum"] += loss.item()
                partial["batches"] += 1
                if boundary:
                    if cfg.clip_grad:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model)
                    done = batch + 1
                    if cfg.checkpoint_every_steps and (done // accum) % cfg.checkpoint_every_steps == 0 and done < batches_per_epoch:
                        partial["seconds"] += time.perf_counter() - tic
                        tic = time.perf_counter()
                        save_last(epoch, done)
                progress.update(batch_task, advance=1, status=f"loss {partial['loss_sum'] / partial['batches']:.4f}")
            partial["seconds"] += time.perf_counter() - tic
            start_batch = 0

            row = {
                "epoch": epoch + 1,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": partial["loss_sum"] / max(partial["batches"], 1),
                "images_per_s": partial["batches"] * cfg.batch_per_device * env.world_size / max(partial["seconds"], 1e-9),
            }
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                raw = evaluate(model, val_loader, env, cfg.amp_dtype)
                row.update(raw_top1=raw["top1"], raw_top5=raw["top5"])
                if ema is not None:
                    ema_metrics = evaluate(ema.module, val_loader, env, cfg.amp_dtype)
                    row.update(ema_top1=ema_metrics["top1"], ema_top5=ema_metrics["top5"])
            history.append(row)
            partial = {"loss_sum": 0.0, "batches": 0, "seconds": 0.0}
            metrics = summarize(history, extra)
            metrics["skipped_images"] = len(read_skips(run.skips))
            if env.is_main and metrics["best_epoch"] == epoch + 1:  # strictly better than every earlier epoch
                weights = ema.module if metrics["best_weights"] == "ema" else model
                atomic_save({"model": weights.state_dict(), "model_name": model_name, "epoch": epoch + 1, "top1": metrics["best_top1"], "weights": metrics["best_weights"]}, run.best)
            save_last(epoch + 1, 0)
            if env.is_main:
                write_json(run.metrics, metrics)
                live.write_history(run.live, history)
                shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
                console.log(f"epoch {epoch + 1}/{cfg.epochs}: {shown}")
            progress.update(epochs_task, advance=1, status=f"best top-1 {metrics['best_top1']:.2f}" if metrics["best_top1"] is not None else "")
    metrics = summarize(history, extra)
    metrics["skipped_images"] = len(read_skips(run.skips))
    if env.is_main:
        write_json(run.metrics, metrics)
        live.write_history(run.live, history)
        if metrics["skipped_images"]:
            console.log(f"[yellow]skipped {metrics['skipped_images']} unreadable images (listed in {run.skips})")
    return metrics
