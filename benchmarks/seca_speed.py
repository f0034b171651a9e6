"""Benchmark: SECA reference (one cluster at a time) vs batched path, and a full forward pass.

Prints milliseconds per call; run with `.venv/bin/python benchmarks/seca_speed.py [--device cuda]`.
"""

from __future__ import annotations

import argparse
import time

import torch

import secvit  # noqa: F401
from secvit.models.seca import seca_batched, seca_reference


def timed(fn, repeats: int, device: str) -> float:
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"device {args.device}, torch {torch.__version__}")
    print(f"{'tokens':>7} {'clusters':>8} {'heads x d':>9} {'reference ms':>13} {'batched ms':>11}")
    for tokens, clusters, heads, dim in [(3136, 32, 2, 32), (784, 8, 4, 32), (196, 2, 8, 32), (66800, 32, 2, 32), (16700, 8, 4, 32)]:
        q, k, v = (torch.randn(8 if tokens < 10000 else 1, heads, tokens, dim, device=args.device) for _ in range(3))
        ref = timed(lambda: seca_reference(q, k, v, clusters), args.repeats, args.device)
        fast = timed(lambda: seca_batched(q, k, v, clusters), args.repeats, args.device)
        print(f"{tokens:>7} {clusters:>8} {heads:>4} x {dim:<3} {ref:>13.2f} {fast:>11.2f}")
    model = secvit.models.create("secvit_small").eval().to(args.device)
    x = torch.randn(64 if args.device == "cuda" else 4, 3, 224, 224, device=args.device)
    with torch.no_grad():
        ms = timed(lambda: model(x), args.repeats, args.device)
    print(f"secvit_small forward, batch {x.shape[0]} at 224: {ms:.1f} ms ({1000 * x.shape[0] / ms:.1f} img/s)")


if __name__ == "__main__":
    main()
