"""The cost of the data stage's verification (secvit.data.verify), measured small and scaled to the real datasets.

Writes a few hundred images per dataset at the real datasets' typical sizes and JPEG file sizes (photo-like
content: smooth shading plus texture, tuned to the bytes per image of the real files), runs the same
verify() as `secvit data` on them cold (every unit decoded) and warm (the cache: only the stat of each
file), and prints seconds per unit and the figures scaled to full ImageNet-1K, COCO 2017 and ADE20K.

    python benchmarks/verify_data.py [--units 300] [--workers 2] [--keep DIR]

The decode cost depends on pixels and bytes, not on what the picture shows, so the synthetic images stand
in for the real ones; the real files' sizes are below (means of the public sets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from secvit.data.layout import Scanned
from secvit.data.verify import verify

#: dataset -> (units in the full dataset (train + val), (width, height), mean JPEG bytes, with a mask)
REAL = {
    "imagenet": (1_281_167 + 50_000, (500, 375), 110_000, False),
    "coco": (118_287 + 5_000, (640, 480), 160_000, False),
    "ade20k": (20_210 + 2_000, (683, 512), 110_000, True),
}


def _photo(rng: np.random.Generator, w: int, h: int, texture: float) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * 60 + 128 + 50 * yy * rng.uniform(-1, 1) for _ in range(3)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, texture, (h, w, 3)), 0, 255).astype(np.uint8), "RGB")


def _texture_for(size: tuple[int, int], target: int, rng: np.random.Generator) -> float:
    """The noise level whose JPEG (quality 90) has about ``target`` bytes."""
    lo, hi = 0.0, 60.0
    for _ in range(12):
        mid = (lo + hi) / 2
        path = Path(tempfile.mktemp(suffix=".jpg"))
        _photo(rng, *size, mid).save(path, quality=90)
        nbytes = path.stat().st_size
        path.unlink()
        lo, hi = (mid, hi) if nbytes < target else (lo, mid)
    return (lo + hi) / 2


def write(root: Path, kind: str, units: int, seed: int = 0) -> tuple[Scanned, float]:
    """``units`` images (with masks for ADE20K) as real-sized files; the mean bytes per image."""
    _, (w, h), target, masks = REAL[kind]
    rng = np.random.default_rng(seed)
    texture = _texture_for((w, h), target, rng)
    folder = root / "images"
    folder.mkdir(parents=True)
    if masks:
        (root / "masks").mkdir()
    rows, total = [], 0
    for i in range(units):
        image = folder / f"{i:08d}.jpg"
        _photo(rng, w, h, texture).save(image, quality=90)
        total += image.stat().st_size
        mask = None
        if masks:
            labels = (rng.integers(0, 151, (h // 16 + 1, w // 16 + 1)).repeat(16, 0).repeat(16, 1)[:h, :w]).astype(np.uint8)
            Image.fromarray(labels, "L").save(root / "masks" / f"{i:08d}.png")
            mask = f"masks/{i:08d}.png"
        rows.append((f"images/{i:08d}.jpg", mask, None))
    return Scanned(counts=None, units=rows, label_files=[]), total / units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--keep", type=Path, help="write the images here and keep them")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="verify-bench-"))
    print(f"{args.units} units per dataset, {args.workers} worker processes, load average {os.getloadavg()[0]:.1f}")
    print(f"{'dataset':9} {'bytes/img':>9} {'cold ms/unit/core':>17} {'warm us/unit':>12} {'full: CPU-h':>11} "
          f"{'16 cores':>9} {'32 cores':>9} {'re-run':>7}")
    try:
        for kind, (full, _, _, _) in REAL.items():
            root = work / kind
            if root.exists() and args.keep is None:
                shutil.rmtree(root)
            scanned, nbytes = write(root, kind, args.units)
            # page cache warm for both runs, as a second pass over a dataset read once would be
            start = time.perf_counter()
            cold = verify(root, kind, scanned, None, workers=args.workers)
            cold_s = time.perf_counter() - start
            assert cold.checked == args.units and not cold.bad, cold.bad
            start = time.perf_counter()
            warm = verify(root, kind, scanned, cold.cache, workers=args.workers)
            warm_s = time.perf_counter() - start
            assert warm.checked == 0
            per_unit = cold_s * args.workers / args.units  # CPU-seconds per unit
            cpu_h = per_unit * full / 3600
            print(f"{kind:9} {nbytes / 1000:8.0f}K {per_unit * 1000:17.1f} {warm_s / args.units * 1e6:12.1f} {cpu_h:11.2f} "
                  f"{cpu_h * 60 / 16:8.1f}m {cpu_h * 60 / 32:8.1f}m {warm_s / args.units * full:6.0f}s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
