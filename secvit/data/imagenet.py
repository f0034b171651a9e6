"""ImageNet in any layout :func:`secvit.data.layout.find_imagenet` accepts (class folders, or a flat
official ``val/`` with the devkit's or Kaggle's labels).

An unreadable or corrupt image never stops a run. The files the data stage found bad are left out
from the start (``exclude``). One that fails later is logged as one ``path<TAB>error`` line to
``skip_log``, a file that every DataLoader worker appends to with a single ``O_APPEND`` write, so
lines from concurrent workers never interleave; in training it is replaced by the next readable
sample of the split (wrapping around), in evaluation (``drop_unreadable``) it is dropped from its
batch (:func:`collate_readable`), so every image counts once and a skipped one lowers the count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, default_collate

from secvit.data.layout import find_imagenet
from secvit.errors import SecvitError

# What PIL raises for missing, truncated, corrupt or oversized files.
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

SPLITS = ("train", "val")


class ImageFolderDataset(Dataset):
    """Images of one split of the ImageNet at ``root``; class index = position of the wnid in sorted order.

    Like torchvision's ``ImageFolder``: ``classes``, ``class_to_idx``, ``samples``
    (``(path, class_index)``) and ``targets``; without ``transform`` an item is
    ``(PIL RGB image, class_index)``. Hidden entries and non-image files are ignored.
    ``exclude`` holds paths relative to ``root`` to leave out (the data stage's bad files).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        skip_log: str | os.PathLike | None = None,
        exclude: Collection[str] = (),
        drop_unreadable: bool = False,
    ) -> None:
        self.root = Path(root) / split
        if split not in SPLITS:
            raise SecvitError(f"{self.root} does not exist; ImageNet's splits are {' and '.join(SPLITS)}")
        tree = find_imagenet(root, splits=(split,))
        self.classes = tree.classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        excluded = set(exclude)
        self.samples: list[tuple[str, int]] = [(os.path.join(root, rel), t) for rel, t in tree.samples[split] if rel not in excluded]
        self.excluded = len(tree.samples[split]) - len(self.samples)
        if not self.samples:
            raise SecvitError(f"no images under {self.root}; expected <wnid>/ class folders holding .JPEG files")
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.drop_unreadable = drop_unreadable
        self.skip_log = Path(skip_log) if skip_log is not None else None
        self.skipped: set[str] = set()  # paths this process skipped (workers each have their own)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        """The RGB image of sample ``index`` (grayscale, CMYK, RGBA, palette become RGB)."""
        with Image.open(self.samples[index][0]) as img:
            return img.convert("RGB")

    def _log_skip(self, path: str, error: BaseException) -> None:
        if path in self.skipped:
            return
        self.skipped.add(path)
        if self.skip_log is not None:
            log_skips(self.skip_log, {path: f"{type(error).__name__}: {error}"})

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        if self.drop_unreadable:
            try:
                image = self.load(index)
            except LOAD_ERRORS as e:
                self._log_skip(self.samples[index][0], e)
                return None
            return (self.transform(image) if self.transform is not None else image), self.samples[index][1]
        n = len(self.samples)
        for offset in range(n):
            i = (index + offset) % n
            try:
                image = self.load(i)
            except LOAD_ERRORS as e:
                self._log_skip(self.samples[i][0], e)
                continue
            return (self.transform(image) if self.transform is not None else image), self.samples[i][1]
        raise SecvitError(f"no readable image under {self.root}; every file failed to load (see {self.skip_log})")


def collate_readable(batch: list[tuple[Any, int] | None]) -> Any:
    """A batch of the readable items (``drop_unreadable``); None when none of them was."""
    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


def log_skips(skip_log: str | os.PathLike, skips: Mapping[str, str]) -> None:
    """Append ``path<TAB>reason`` lines to ``skip_log``, one ``O_APPEND`` write each (workers share the file)."""
    if not skips:
        return
    Path(skip_log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(skip_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for path, reason in skips.items():
            os.write(fd, f"{path}\t{' '.join(reason.split())}\n".encode("utf-8", "replace"))
    finally:
        os.close(fd)


def read_skips(skip_log: str | os.PathLike) -> list[tuple[str, str]]:
    """Skipped images ``(path, error)`` logged so far by all processes, each path once, sorted by path."""
    path = Path(skip_log)
    if not path.is_file():
        return []
    seen: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line:
            file, _, error = line.partition("\t")
            seen.setdefault(file, error)
    return sorted(seen.items())
