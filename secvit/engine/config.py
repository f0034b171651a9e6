"""The ImageNet training recipe as named settings.

params.yaml keeps a run's settings in three places, so that DVC tracks exactly what changes results:

- ``<profile>.pretrain``: the recipe every run of the profile shares (tracked by every pretraining stage);
- ``<profile>.pretrain_runs.<run>``: the settings of one run (:data:`RUN_SETTINGS`; tracked by that run's
  stage only, so changing one model's drop-path rate re-plans that model's run alone);
- ``<profile>.pretrain_speed``: options that change speed or memory, not results (:data:`SPEED_SETTINGS`;
  tracked by no stage, and a checkpoint written with other values resumes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from secvit.errors import SecvitError

#: Settings of one run (``<profile>.pretrain_runs.<run>``): its drop-path rate, and (optionally) its
#: number of epochs in place of the shared recipe's.
RUN_SETTINGS = ("drop_path", "epochs")
#: Speed and memory options (``<profile>.pretrain_speed``): same results, so untracked and resumable.
#: ``batch_per_device`` changes the gradient accumulation that keeps the global batch, as the number
#: of GPUs does (the random draws per micro-batch then differ: same recipe, not the same bits).
SPEED_SETTINGS = ("batch_per_device", "fused_optimizer", "channels_last", "compile", "grad_checkpointing", "workers", "checkpoint_every_steps")


@dataclass
class PretrainConfig:
    """Every hyperparameter of the DeiT-style recipe of the paper (appendix B); no hidden defaults."""

    epochs: int
    batch_size: int  # global batch, reached with gradient accumulation if needed
    batch_per_device: int  # the most images one device takes per forward pass
    lr_base: float  # learning rate per lr_base_batch images: lr = lr_base * batch_size / lr_base_batch
    lr_base_batch: int
    warmup_epochs: int
    warmup_lr: float
    min_lr: float
    weight_decay: float
    no_decay_bias_norm: bool
    opt: str
    opt_eps: float
    opt_betas: list[float]
    clip_grad: float | None
    sched: str
    img_size: int
    train_crop_scale: list[float]  # RandomResizedCrop area range
    interpolation: str
    auto_augment: str | None
    color_jitter: float
    hflip: float
    reprob: float
    remode: str
    recount: int
    eval_crop_pct: float
    mixup_alpha: float
    cutmix_alpha: float
    mixup_prob: float
    mixup_switch_prob: float
    mixup_mode: str
    smoothing: float
    repeated_aug: bool
    repeated_aug_repeats: int
    ema: bool
    ema_decay: float  # per step at ema_decay_batch; scaled as ema_decay ** (batch_size / ema_decay_batch)
    ema_decay_batch: int
    drop_path: float  # the run's stochastic depth rate (pretrain_runs.<run>.drop_path)
    sync_bn: bool
    amp_dtype: str | None  # bfloat16 on GPU; ignored on CPU
    fused_optimizer: bool  # fused AdamW kernel (one kernel for all parameters; same updates)
    channels_last: bool  # convolutions on channels-last memory (model and input batches)
    compile: bool  # torch.compile the training model (opt-in; first steps are slow)
    grad_checkpointing: bool  # recompute each block in backward: less memory, about 1/3 more compute
    seed: int
    workers: int
    eval_every: int
    checkpoint_every_steps: int  # 0: checkpoint at epoch ends only

    def validate(self, where: str) -> None:
        positive = ("epochs", "batch_size", "batch_per_device", "lr_base_batch", "img_size", "ema_decay_batch", "eval_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SecvitError(f"setting '{where}.{name}' must be positive, got {getattr(self, name)}")
        if self.lr_base <= 0 or not 0 <= self.warmup_epochs < self.epochs:
            raise SecvitError(f"'{where}': need lr_base > 0 and 0 <= warmup_epochs < epochs")
        if not 0 <= self.ema_decay < 1:
            raise SecvitError(f"setting '{where}.ema_decay' must be in [0, 1), got {self.ema_decay}")
        if self.amp_dtype not in (None, "bfloat16", "float16"):
            raise SecvitError(f"setting '{where}.amp_dtype' must be bfloat16, float16 or null")
        if self.img_size < 32:
            raise SecvitError(f"setting '{where}.img_size' must be at least 32, got {self.img_size}")
        if not 0 <= self.drop_path < 1:
            raise SecvitError(f"setting '{where}.drop_path' must be in [0, 1), got {self.drop_path}")
        if self.workers < 0 or self.checkpoint_every_steps < 0:
            raise SecvitError(f"'{where}': workers and checkpoint_every_steps must be >= 0")

    @property
    def lr(self) -> float:
        return self.lr_base * self.batch_size / self.lr_base_batch

    @property
    def ema_decay_per_step(self) -> float:
        return self.ema_decay ** (self.batch_size / self.ema_decay_batch)

    def micro_batch(self, world_size: int) -> tuple[int, int]:
        """(images per device per forward pass, gradient accumulation steps) that keep the global batch
        on ``world_size`` devices: each device takes ``batch_size / world_size`` images of every optimizer
        step, in as few passes as fit ``batch_per_device``. A device count that does not divide the
        global batch cannot keep it: one-line error."""
        if world_size < 1:
            raise SecvitError(f"need at least one device, got {world_size}")
        if self.batch_size % world_size:
            fits = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256) if self.batch_size % n == 0 and n <= self.batch_size]
            nearest = self.batch_size - self.batch_size % world_size
            raise SecvitError(
                f"global batch {self.batch_size} cannot be split evenly over {world_size} devices; run on a device count "
                f"that divides it ({', '.join(map(str, fits))}, ...) or set batch_size to a multiple of {world_size} "
                f"(e.g. {nearest or world_size} or {nearest + world_size})"
            )
        share = self.batch_size // world_size
        accum = -(-share // self.batch_per_device)
        while share % accum:
            accum += 1
        return share // accum, accum

    def accumulation(self, world_size: int) -> int:
        """Gradient accumulation steps that reach the global batch on ``world_size`` devices."""
        return self.micro_batch(world_size)[1]

    def to_dict(self) -> dict:
        return asdict(self)


def recipe_of_run(shared: dict[str, Any], speed: dict[str, Any], run: dict[str, Any], where: str) -> PretrainConfig:
    """The recipe of one run from the three sections (``where``: ``<profile>``, for messages):
    the shared recipe, the speed options and the run's own settings on top."""
    from secvit.params import from_section

    for name, part, allowed in (("pretrain_speed", speed, SPEED_SETTINGS), ("pretrain_runs.<run>", run, RUN_SETTINGS)):
        if not isinstance(part, dict):
            raise SecvitError(f"{where}.{name} must be a mapping of settings")
        unknown = sorted(set(part) - set(allowed))
        if unknown:
            raise SecvitError(f"unknown setting '{where}.{name}.{unknown[0]}'; valid settings there: {', '.join(allowed)}")
    misplaced = sorted(set(shared) & (set(SPEED_SETTINGS) | {"drop_path"}))
    if misplaced:
        home = "pretrain_speed" if misplaced[0] in SPEED_SETTINGS else "pretrain_runs.<run>"
        raise SecvitError(f"setting '{where}.pretrain.{misplaced[0]}' belongs in {where}.{home}")
    if "drop_path" not in run:
        raise SecvitError(f"missing setting '{where}.pretrain_runs.<run>.drop_path'")
    return from_section(PretrainConfig, {**shared, **speed, **run}, f"{where}.pretrain")


def pretrain_config(params_path: str | Path, profile: str, run: str | None) -> PretrainConfig:
    """The pretraining recipe of run ``run`` (a run key: ``secvit_tiny``, ``secvit_tiny-no_lce``) in the
    params file, from ``<profile>.pretrain``, ``<profile>.pretrain_speed`` and
    ``<profile>.pretrain_runs.<run>``; with ``run`` None (evaluation of any checkpoint), the shared
    recipe with no drop path."""
    from secvit.params import load_params, profile_section, section

    params = load_params(params_path)
    shared = profile_section(params, profile, "pretrain")
    speed = profile_section(params, profile, "pretrain_speed")
    own = section(params, f"{profile}.pretrain_runs.{run}", str(params_path)) if run else {"drop_path": 0.0}
    return recipe_of_run(shared, speed, own, profile)
