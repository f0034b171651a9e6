"""ImageNet in the standard ImageFolder layout (``<root>/<split>/<wnid>/*.JPEG``).

An unreadable or corrupt image never stops training: it is replaced by the next
readable sample of the split, and logged (``path<TAB>error``, one line each) to
``skip_log``, a file that every DataLoader worker appends to.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from secvit.data.layout import is_image_name
from secvit.errors import SecvitError


class ImageFolderDataset(Dataset):
    """Images of ``root/split``; class index = position of the wnid in sorted order."""

    def __init__(self, root: str | os.PathLike, split: str, transform: Callable | None = None, skip_log: Path | None = None) -> None:
        self.root = Path(root) / split
        if not self.root.is_dir():
            raise SecvitError(f"{self.root} does not exist; expected the ImageFolder layout <root>/{split}/<wnid>/*.JPEG")
        self.classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for wnid in self.classes:
            folder = self.root / wnid
            names = sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_name(e.name))
            self.samples += [(str(folder / n), self.class_to_idx[wnid]) for n in names]
        if not self.samples:
            raise SecvitError(f"no images under {self.root}")
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.skip_log = Path(skip_log) if skip_log else None

    def __len__(self) -> int:
        return len(self.samples)

    def _log_skip(self, path: str, error: Exception) -> None:
        if self.skip_log is not None:
            self.skip_log.parent.mkdir(parents=True, exist_ok=True)
            message = " ".join(str(error).split()) or type(error).__name__
            with open(self.skip_log, "a") as f:
                f.write(f"{path}\t{message}\n")

    def load(self, index: int) -> Image.Image:
        path, _ = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB")

    def __getitem__(self, index: int):
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                image = self.load(i)
            except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for truncated/corrupt files
                self._log_skip(self.samples[i][0], e)
                continue
            return (self.transform(image) if self.transform else image), self.samples[i][1]
        raise SecvitError(f"no readable image under {self.root}")


def read_skips(skip_log: Path) -> list[tuple[str, str]]:
    """Skipped images (path, error) logged so far, each path once."""
    if not Path(skip_log).exists():
        return []
    seen: dict[str, str] = {}
    for line in Path(skip_log).read_text().splitlines():
        path, _, error = line.partition("\t")
        seen.setdefault(path, error)
    return sorted(seen.items())
