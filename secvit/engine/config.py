"""The ImageNet training recipe as named settings (``<profile>.pretrain`` in params.yaml)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from secvit.errors import SecvitError


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
    drop_path: dict[str, float]  # per model
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
    run_epochs: dict[str, int]  # epochs of named runs (secvit.runs.run_key) in place of `epochs`; the rest is the same

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
        for run, epochs in self.run_epochs.items():
            if not self.warmup_epochs < epochs:
                raise SecvitError(f"setting '{where}.run_epochs.{run}' must be more than warmup_epochs ({self.warmup_epochs}), got {epochs}")
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

    def for_run(self, run: str) -> PretrainConfig:
        """The recipe of run ``run``: this one, with its ``run_epochs`` entry (if any) as ``epochs``."""
        return replace(self, epochs=self.run_epochs.get(run, self.epochs))

    def drop_path_for(self, model: str) -> float:
        if model not in self.drop_path:
            raise SecvitError(f"no drop_path rate for {model} in pretrain.drop_path (have: {', '.join(self.drop_path)})")
        return self.drop_path[model]

    def to_dict(self) -> dict:
        return asdict(self)
