"""ImageNet in the standard ImageFolder layout (``<root>/<split>/<wnid>/*.JPEG``).

An unreadable or corrupt image never stops training: it is replaced by the next
readable sample of the split (wrapping around), and logged as one ``path<TAB>error``
line to ``skip_log``, a file that every DataLoader worker appends to with a single
``O_APPEND`` write, so lines from concurrent workers never interleave.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from secvit.data.layout import is_image_name
from secvit.errors import SecvitError

# What PIL raises for missing, truncated, corrupt or oversized files.
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _visible_entries(path: str | os.PathLike) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return [e for e in it if not e.name.startswith(".")]


class ImageFolderDataset(Dataset):
    """Images of ``root/split``; class index = position of the wnid in sorted order.

    Like torchvision's ``ImageFolder``: ``classes``, ``class_to_idx``, ``samples``
    (``(path, class_index)``) and ``targets``; without ``transform`` an item is
    ``(PIL RGB image, class_index)``. Hidden entries and non-image files are ignored.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        skip_log: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root) / split
        if not self.root.is_dir():
            raise SecvitError(f"{self.root} does not exist; expected the ImageFolder layout <root>/{split}/<wnid>/*.JPEG")
        self.classes = sorted(e.name for e in _visible_entries(self.root) if e.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for idx, wnid in enumerate(self.classes):
            folder = os.path.join(self.root, wnid)
            names = sorted(e.name for e in _visible_entries(folder) if is_image_name(e.name) and e.is_file())
            self.samples += [(os.path.join(folder, n), idx) for n in names]
        if not self.samples:
            raise SecvitError(f"no images under {self.root}; expected <wnid>/ class folders holding .JPEG files")
        self.targets = [t for _, t in self.samples]
        self.transform = transform
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
        if self.skip_log is None:
            return
        message = " ".join(f"{type(error).__name__}: {error}".split())
        line = f"{path}\t{message}\n".encode("utf-8", "replace")
        self.skip_log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.skip_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def __getitem__(self, index: int) -> tuple[Any, int]:
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
