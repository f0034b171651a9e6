"""ImageNet data loaders for the recipe, with randomness that is a pure function of
(seed, epoch, sample or step). That makes a resumed run continue exactly where the
interrupted one stopped, whatever the worker count or the step it died at."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import auto_augment, create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from secvit.data.imagenet import ImageFolderDataset, collate_readable
from secvit.engine.config import PretrainConfig
from secvit.engine.distributed import DistEnv


def derived_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (stable across processes and runs)."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SeededDataset(Dataset):
    """Seeds every RNG from (seed, epoch, position) before loading a sample, so its augmentation does
    not depend on which worker loads it or what was loaded before.

    Items are ``(index, position)`` pairs (:class:`GlobalBatchShare` yields them): ``position`` is the
    sample's place in the epoch's order, which differs between the copies of an image that repeated
    augmentation puts in one epoch, so each copy is augmented independently (as DeiT's are: there
    every copy is loaded by another GPU's process, with its own RNG state)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, position = item
        seed_everything(derived_seed(self.seed, self.epoch, position))
        return self.dataset[index]


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, no padding: exact metrics across ranks."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class GlobalBatchShare(Sampler[tuple[int, int]]):
    """This device's micro-batches of every global batch of one epoch's sample order.

    ``sampler`` yields the whole epoch's order (the same on every device). Optimizer step ``s``
    trains on positions ``[s * global_batch, (s + 1) * global_batch)`` of it, cut into
    ``M = world_size * accumulation`` micro-batches by dealing: position ``p`` of the step goes to
    micro-batch ``p % M``, as DeiT's repeated-augmentation sampler deals the epoch's order across
    GPUs. The copies of an image, which repeated augmentation puts next to each other in the order,
    thus land in different micro-batches wherever a step has at least as many micro-batches as copies
    (and so get their own Mixup/CutMix draw and BatchNorm statistics). Device ``rank`` takes
    micro-batches ``rank * accumulation ... (rank + 1) * accumulation - 1``, one after the other. Each
    step thus sees the same images, split into the same micro-batches, on any device count with the
    same micro-batch: one device accumulating two micro-batches computes what two devices compute. A
    partial last global batch is dropped.

    Yields ``(dataset index, position in the epoch's order)``: :class:`SeededDataset` seeds each
    sample's augmentation by its position.
    """

    def __init__(self, sampler: Sampler[int], rank: int, world_size: int, global_batch: int, accumulation: int) -> None:
        self.sampler, self.global_batch = sampler, global_batch
        self.micro_batches = world_size * accumulation
        self.mine = range(rank * accumulation, (rank + 1) * accumulation)
        self.share = global_batch // world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = list(self.sampler)
        for start in range(0, len(order) - self.global_batch + 1, self.global_batch):
            for micro in self.mine:
                for position in range(start + micro, start + self.global_batch, self.micro_batches):
                    yield order[position], position

    def __len__(self) -> int:
        return len(self.sampler) // self.global_batch * self.share


class SkipSampler(Sampler):
    """The items of ``sampler`` for the current epoch, starting after the first ``skip``."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator:
        indices = list(self.sampler)
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


def posterize(img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
    """timm's RandAugment posterize, with 0 bits kept as Pillow before 10 kept them: every value masked to 0.
    ``PosterizeIncreasing`` keeps 4 bits down to 0 as the magnitude rises to its maximum, 10, which the recipe's
    noisy magnitude (m9, std 0.5) reaches in about 2% of draws; the locked Pillow refuses 0 bits with a
    ValueError that would stop a run at its first such draw."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def train_transform(cfg: PretrainConfig):
    transform = create_transform(
        cfg.img_size,
        is_training=True,
        scale=tuple(cfg.train_crop_scale),
        auto_augment=cfg.auto_augment,
        color_jitter=cfg.color_jitter,
        hflip=cfg.hflip,
        interpolation=cfg.interpolation,
        re_prob=cfg.reprob,
        re_mode=cfg.remode,
        re_count=cfg.recount,
    )
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):  # RandAugment's operations
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = posterize
    return transform


def eval_transform(img_size: int, crop_pct: float, interpolation: str):
    """Resize the short side to img_size / crop_pct (256 for 224), centre crop img_size."""
    return create_transform(img_size, is_training=False, interpolation=interpolation, crop_pct=crop_pct)


def _loader(dataset: Dataset, sampler: Sampler, batch: int, workers: int, env: DistEnv, drop_last: bool, collate_fn=None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=env.device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,  # workers must see each epoch's SeededDataset.epoch
        collate_fn=collate_fn,
    )


def build_train_loader(root: Path, cfg: PretrainConfig, env: DistEnv, skip_log: Path | None, exclude: Collection[str] = ()) -> DataLoader:
    """Micro-batches of this device's share of each global batch (:class:`GlobalBatchShare`); ``exclude``: the bad images."""
    dataset = SeededDataset(ImageFolderDataset(root, "train", transform=train_transform(cfg), skip_log=skip_log, exclude=exclude), cfg.seed)
    if cfg.repeated_aug:  # the order of one replica: every device cuts its share from it
        order = RepeatAugSampler(dataset, num_replicas=1, rank=0, num_repeats=cfg.repeated_aug_repeats)
    else:
        order = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed)
    micro, accum = cfg.micro_batch(env.world_size)
    share = GlobalBatchShare(order, env.rank, env.world_size, cfg.batch_size, accum)
    return _loader(dataset, SkipSampler(share), micro, cfg.workers, env, drop_last=True)


def build_eval_loader(
    root: Path, img_size: int, crop_pct: float, interpolation: str, batch: int, workers: int, env: DistEnv, skip_log: Path | None = None,
    exclude: Collection[str] = (),
) -> DataLoader:
    """Every validation image once: an unreadable one is dropped from its batch (a batch may be None), never replaced."""
    dataset = ImageFolderDataset(
        root, "val", transform=eval_transform(img_size, crop_pct, interpolation), skip_log=skip_log, exclude=exclude, drop_unreadable=True
    )
    sampler = ShardSampler(len(dataset), env.rank, env.world_size)
    return _loader(dataset, sampler, batch, workers, env, drop_last=False, collate_fn=collate_readable)


def set_epoch(loader: DataLoader, epoch: int, skip_batches: int = 0) -> None:
    """Select the epoch's sample order and augmentation; resume after ``skip_batches`` batches."""
    loader.dataset.epoch = epoch
    loader.sampler.set_epoch(epoch, skip_batches * loader.batch_size)
