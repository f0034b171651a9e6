"""What this machine can run: ``secvit doctor``.

Each check is one row (name, status, detail). ``fail`` means the profile asked for cannot
run here; ``warn`` is worth knowing but stops nothing; ``ok`` and ``info`` are findings.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from secvit.cost.rates import load_throughput
from secvit.data.config import DATASETS, data_config
from secvit.data.layout import ADE_DIR, check_ade20k, check_coco, check_imagenet
from secvit.device import ALLOW_CPU_VAR, cpu_allowed, cuda_report, mmcv_problem, mmcv_report, profile_device
from secvit.errors import SecvitError
from secvit.visualize import figure_image
from secvit.params import load_params, section
from secvit.study import load_study
from secvit.study.slurm import cluster_partitions, kind_settings

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
#: Packages shown by name (the lockfile row counts all of them).
KEY_PACKAGES = ("torch", "torchvision", "timm", "mmengine", "mmcv", "mmdet", "mmsegmentation", "dvc", "submitit")
SINFO_TIMEOUT_S = 10
#: CUDA major version -> (lockfile, what its torch wheels need); scripts/cuda_lock.sh picks one per machine.
CUDA_LOCKS = {
    "13": ("requirements.lock", "CUDA 13.0: NVIDIA driver >= 580"),
    "12": ("requirements-cu12.lock", "CUDA 12.8: NVIDIA driver >= 570 (>= 525 through CUDA minor-version compatibility)"),
}


@dataclass
class Row:
    check: str
    status: str
    detail: str


@dataclass
class Report:
    profile: str
    rows: list[Row] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str) -> None:
        self.rows.append(Row(check, status, detail))

    @property
    def runnable(self) -> bool:
        """Whether the profile can run here: no row failed."""
        return all(r.status != FAIL for r in self.rows)


def lock_pins(lockfile: Path | str) -> dict[str, str]:
    """``name -> version`` of every pin in a uv/pip-compile lockfile."""
    pins = {}
    for line in Path(lockfile).read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, pinned = line.strip().partition("==")
            pins[name.strip().lower()] = pinned.split(";")[0].strip()
    return pins


def lock_parents(lockfile: Path | str) -> dict[str, set[str]]:
    """``name -> what pulls it in`` from a uv/pip-compile lockfile's ``# via`` notes
    (``-r requirements.in`` for a direct dependency)."""
    parents: dict[str, set[str]] = {}
    current = None
    for line in Path(lockfile).read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            current = line.strip().partition("==")[0].strip().lower()
            parents[current] = set()
        elif current and line.lstrip().startswith("#"):
            note = line.lstrip("# ").strip()
            note = note.removeprefix("via").strip()
            if note:
                parents[current].add(note.split(" (")[0].lower())
    return parents


def requirement_names(requirements: Path | str) -> set[str]:
    """The package names a requirements file (such as requirements-cu12.in) pins."""
    lines = (line.split("#")[0].strip() for line in Path(requirements).read_text().splitlines())
    return {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in lines if line}


def torch_closure(lockfile: Path | str, roots: set[str]) -> set[str]:
    """``roots`` (requirement_names of requirements-cu12.in: torch, torchvision) and every package of the
    lockfile that only they pull in: what a lockfile for another CUDA version may pin differently."""
    parents = lock_parents(lockfile)
    closure = set(roots)
    grew = True
    while grew:
        grew = False
        for name, via in parents.items():
            if name not in closure and via and via <= closure:
                closure.add(name)
                grew = True
    return closure


def lock_in_use() -> str:
    """The lockfile this environment was installed from: as scripts/env.sh recorded it in the
    environment (``.secvit-lock``), else the one for torch's CUDA major version."""
    recorded = Path(sys.prefix) / ".secvit-lock"
    if recorded.is_file():
        return recorded.read_text().strip()
    major = (torch.version.cuda or "13").split(".")[0]
    return CUDA_LOCKS.get(major, CUDA_LOCKS["13"])[0]


def lock_needs(lockfile: Path | str) -> str:
    """What the lockfile's torch needs of the machine, e.g. ``CUDA 12.8: NVIDIA driver >= 570 (>= 525 ...)``."""
    for name, driver in CUDA_LOCKS.values():
        if Path(lockfile).name == name:
            return driver
    return "unknown (not one of the project's lockfiles)"


def lock_mismatches(pins: dict[str, str]) -> list[str]:
    """``name installed != pinned`` (or ``name missing``) for every pin the environment does not match."""
    wrong = []
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name} missing")
            continue
        if installed.split("+")[0] != pinned.split("+")[0]:
            wrong.append(f"{name} {installed} != {pinned}")
    return wrong


def _environment(report: Report, lockfile: Path | None) -> None:
    py = platform.python_version()
    report.add("python", OK if sys.version_info[:2] == (3, 11) else FAIL, f"{py} ({sys.executable}); the lockfiles are for 3.11")
    lockfile = lockfile or Path(lock_in_use())
    if not lockfile.is_file():
        report.add("lockfile", FAIL, f"{lockfile} not found; run from the repository root or pass --lock")
        return
    pins = lock_pins(lockfile)
    wrong = lock_mismatches(pins)
    shown = "; ".join(wrong[:4]) + (f"; and {len(wrong) - 4} more" if len(wrong) > 4 else "")
    report.add(
        "lockfile",
        OK if not wrong else FAIL,
        f"{len(pins) - len(wrong)}/{len(pins)} packages as pinned in {lockfile.name} (torch {pins.get('torch')}, {lock_needs(lockfile)})"
        + (f": {shown} (bash scripts/env.sh)" if wrong else ""),
    )
    found = []
    for name in KEY_PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    report.add("packages", INFO, ", ".join(found))


def _cuda(report: Report, needs_cuda: bool, needs_mmcv: bool) -> None:
    cuda = cuda_report()
    bad = FAIL if needs_cuda else INFO
    report.add("torch CUDA", OK if cuda.torch_cuda else bad, f"torch {cuda.torch} built with CUDA {cuda.torch_cuda or 'none (CPU build)'}")
    if cuda.driver:
        report.add("NVIDIA driver", OK, f"{cuda.driver} (supports CUDA up to {cuda.driver_cuda})")
    else:
        report.add("NVIDIA driver", bad, "none found")
    if cuda.usable:
        gpus = "; ".join(f"{g.index}: {g.name} ({g.arch}, {g.memory_gb} GiB)" for g in cuda.gpus)
        report.add("GPUs", OK, gpus)
    else:
        report.add("GPUs", bad, f"CUDA unusable: {cuda.problem}")
    mmcv = mmcv_report()
    if mmcv.problem:
        report.add("mmcv CUDA ops", FAIL, mmcv.problem)
    elif mmcv.cuda is None:
        problem = mmcv_problem(mmcv, cuda.gpus)
        report.add("mmcv CUDA ops", FAIL if needs_mmcv else INFO, f"none: mmcv {mmcv.version} has CPU ops only ({problem.split('; ')[-1]})")
    else:
        archs = ", ".join(mmcv.archs) if mmcv.archs else "architectures unknown"
        problem = mmcv_problem(mmcv, cuda.gpus) if cuda.usable else None
        report.add("mmcv CUDA ops", FAIL if problem and needs_mmcv else (WARN if problem else OK), problem or f"CUDA {mmcv.cuda}: {archs}")
    if cuda.usable:
        report.add("bf16", OK if cuda.bf16 else WARN, "bf16 on every GPU" if cuda.bf16 else "a GPU older than sm_80 has no bf16: use fp16 or fp32")
    else:
        report.add("bf16", INFO, f"no GPU; CPU autocast in bf16 (CPU kernels: {torch.backends.cpu.get_cpu_capability()})")


def _datasets(report: Report, params: Path, profile: str) -> None:
    data = data_config(params, profile)
    checks = {"imagenet": check_imagenet, "coco": check_coco, "ade20k": check_ade20k}
    for name in DATASETS:
        root = data.root(name)
        generated = bool(data.generate and name in data.generate)
        if not root.exists():
            if generated:
                report.add(f"data: {name}", WARN, f"{root} not generated yet (secvit data --profile {profile} --dataset {name})")
            else:
                report.add(f"data: {name}", FAIL, f"{root} does not exist; set {profile}.data.{name} in {params}")
            continue
        try:
            counts = checks[name](root, data.expected_for(name), f"{profile}.data.expected.{name} in {params}")
        except SecvitError as e:
            report.add(f"data: {name}", FAIL, str(e))
            continue
        splits = ", ".join(f"{k} {v:,}" for k, v in counts.splits.items())
        where = root / ADE_DIR if name == "ade20k" else root
        report.add(f"data: {name}", OK, f"{where}: {splits}" + (f", {counts.classes} classes" if counts.classes else ""))
    _figure_image(report, params, profile, generated=bool(data.generate and "imagenet" in data.generate) and not data.root("imagenet").exists())


def _figure_image(report: Report, params: Path, profile: str, generated: bool) -> None:
    """The image of the figures stage (the study's last stage), found now rather than after the study."""
    try:
        report.add("figures: image", OK, str(figure_image(profile, params)))
    except SecvitError as e:
        report.add("figures: image", WARN if generated else FAIL, str(e) + (" (not generated yet)" if generated else ""))


def _slurm(report: Report, params: Path) -> None:
    partition = section(load_params(params), "slurm.partition", str(params))
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        report.add("SLURM", WARN, f"sinfo not on PATH: no SLURM here (stages run with --executor local; slurm.partition is {partition!r})")
        return
    try:
        out = subprocess.run(
            [sinfo, "-h", "-p", str(partition), "-o", "%P %a %D %G"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        report.add("SLURM", WARN, f"sinfo -p {partition} gave no answer in {SINFO_TIMEOUT_S} s: slurmctld unreachable")
        return
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        why = (out.stderr.strip().splitlines() or ["no such partition"])[-1]
        report.add("SLURM", WARN, f"partition {partition!r} not available: {why} (set slurm.partition in {params})")
        return
    name, state, nodes, gres = (lines[0].split() + ["", "", "", ""])[:4]
    gres = "" if gres == "(null)" else gres
    report.add("SLURM", OK if state == "up" else WARN, f"partition {name.rstrip('*')} {state}, {nodes} nodes, GPUs/gres {gres or 'none'}")


def _slurm_jobs(report: Report, params: Path, profile: str) -> None:
    """The SLURM settings each stage kind's jobs resolve to, and what `secvit repro --executor slurm` would refuse."""
    gpu = profile_device(params, profile) == "cuda"
    rate = load_throughput(None, params.parent).checkpoint_gb_per_s
    for kind, settings, problem in kind_settings(load_study(params), profile, gpu, cluster_partitions(), rate):
        report.add(f"SLURM {kind} jobs", WARN if problem else OK, f"refused: {problem}" if problem else settings.describe())


def diagnose(profile: str, params: Path, lockfile: Path | None = None) -> Report:
    """Every check for ``profile``; ``report.runnable`` says whether it can run here."""
    needs_cuda = profile_device(params, profile) == "cuda"
    report = Report(profile)
    _environment(report, lockfile)
    _cuda(report, needs_cuda, needs_mmcv=needs_cuda)
    if needs_cuda and not report.runnable and cpu_allowed():
        report.add("CPU opt-in", WARN, f"{ALLOW_CPU_VAR} is set: the stages would train on the CPU")
    _datasets(report, params, profile)
    _slurm(report, params)
    if shutil.which("sinfo") is not None:
        _slurm_jobs(report, params, profile)
    return report
