"""Benchmark: how close `secvit plan` comes to the smoke profile's real stage times (the cost plan, secvit/cost/).

    .venv/bin/python benchmarks/plan_vs_run.py                 # a fresh clone: `secvit repro all --jobs 2`, then the comparison
    .venv/bin/python benchmarks/plan_vs_run.py --project DIR   # a project where `secvit repro all --jobs N` has run

It measures this CPU as the stages ran on it (`secvit bench train`, one thread each, two side by side: CPU time grows
when both cores are busy), asks `secvit plan --executor local` for every stage, and prints each stage's CPU time
against its planned time. A stage's CPU time is its process's (runs/<profile>/logs/stage_times.json): with one thread,
its wall time on an idle machine. Figures, no verdict: docs/benchmarks.md records the last ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cwd: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(list(args), cwd=cwd, env=env, check=True, text=True, **kwargs)


def measure_rates(project: Path, profile: str, model: str) -> None:
    """Two `secvit bench train` side by side, one thread each, as two stages ran side by side."""
    bench = ["secvit", "bench", "train", "--profile", profile, "--model", model, "--steps", "4", "--threads", "1"]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    beside = subprocess.Popen([*bench, "--out", "runs/bench/beside.json"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    _run(project, *bench, capture_output=True)
    _, err = beside.communicate()
    if beside.returncode:
        raise SystemExit(f"the second bench failed: {err[-2000:]}")


def compare(project: Path, profile: str) -> list[tuple[str, float, float, float]]:
    """(stage, CPU-s it ran, wall s it ran, planned s) of every stage the runner recorded."""
    ran = json.loads((project / "runs" / profile / "logs" / "stage_times.json").read_text())
    plan = json.loads(_run(project, "secvit", "plan", "--profile", profile, "--executor", "local", "--json", capture_output=True).stdout)
    planned = {s["stage"]: s["wall_s"] for s in plan["stages"]}
    return [(name, t["cpu_seconds"], t["seconds"], planned[name]) for name, t in sorted(ran.items()) if name in planned]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a project where `secvit repro all --jobs N` ran (default: a fresh clone, run here)")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--model", default="secvit_tiny", help="the model `secvit bench train` times")
    parser.add_argument("--jobs", default="2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project
        if project is None:
            project = Path(tmp) / "clone"
            _run(ROOT, "git", "clone", "-q", str(ROOT), str(project))
            _run(project, "secvit", "repro", "all", "--profile", args.profile, "--jobs", args.jobs, capture_output=True)
        measure_rates(project, args.profile, args.model)
        rows = compare(project, args.profile)
    print(f"{'stage':58} {'CPU-s':>8} {'wall s':>8} {'planned':>8} {'ratio':>6}")
    for name, cpu, wall, planned in rows:
        print(f"{name:58} {cpu:8.1f} {wall:8.1f} {planned:8.1f} {cpu / planned:6.2f}")
    ratios = [cpu / planned for _, cpu, _, planned in rows]
    print(f"{len(rows)} stages, CPU time / plan {min(ratios):.2f}-{max(ratios):.2f}; "
          f"sum {sum(r[1] for r in rows):.0f} CPU-s run, {sum(r[3] for r in rows):.0f} s planned")


if __name__ == "__main__":
    main()
