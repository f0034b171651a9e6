"""What this machine's devices can run (CUDA, the NVIDIA driver, mmcv's CUDA ops), and the check that stages meant for
GPUs make first.

A stage of the paper profile (``<profile>.device: cuda`` in params.yaml) or any stage given
``--device cuda`` calls :func:`require_device` before it touches a dataset: CUDA must be
usable, the NVIDIA driver new enough for the installed torch and, for detection and
segmentation, mmcv built with CUDA ops for this GPU. A failure is one line saying what to
install or set. Training such a stage on the CPU anyway needs the opt-in
``SECVIT_ALLOW_CPU=1`` (the stage commands' ``--allow-cpu`` sets it).

Everything here is cheap: NVML (the driver's own library) and torch's CUDA queries, no
CUDA context, no kernels.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from secvit.errors import SecvitError
from secvit.params import load_params, profile_section

DEVICES = ("cpu", "cuda")
#: Without CUDA, the number of CPU processes a stage trains with (gloo): a stand-in for GPUs in tests and on laptops.
CPU_DEVICES_VAR = "SECVIT_CPU_DEVICES"
ALLOW_CPU_VAR = "SECVIT_ALLOW_CPU"
#: The Linux driver branch that first supports each CUDA major version (NVIDIA's CUDA release notes; within a
#: major version, minor-version compatibility runs newer minor versions on it).
MIN_DRIVER = {13: "580", 12: "525", 11: "450"}
#: The CUDA major versions that have a lockfile (scripts/cuda_lock.sh: requirements.lock, requirements-cu12.lock).
CUDA_LOCKS = (13, 12)
#: How to get mmcv with CUDA ops (scripts/env.sh builds it where a GPU is visible).
MMCV_CUDA_FIX = "SECVIT_MMCV_CUDA=1 bash scripts/env.sh"
_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)


@dataclass
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]
    memory_gb: float

    @property
    def arch(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}"


@dataclass
class CudaReport:
    """torch's CUDA, the driver and the visible GPUs; ``problem`` says why CUDA is unusable."""

    torch: str
    torch_cuda: str | None  # CUDA version torch was built with; None for a CPU build
    driver: str | None = None  # NVIDIA driver version, None without a driver
    driver_cuda: str | None = None  # newest CUDA version the driver supports
    gpus: list[Gpu] = field(default_factory=list)
    bf16: bool | None = None  # bf16 on every visible GPU (None: no usable GPU)
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass
class MmcvReport:
    """mmcv's compiled ops: the CUDA they were built with, for which architectures."""

    version: str | None
    cuda: str | None  # get_compiling_cuda_version(); None for a CPU-only build
    archs: list[str] | None  # sm_90, compute_90 (PTX), ... of the compiled kernels; None if unknown
    problem: str | None = None  # why mmcv cannot be imported at all


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def _nvml() -> tuple[str, str] | str:
    """(driver version, newest CUDA it supports) from NVML, or a line saying why there is none."""
    try:
        import pynvml  # optional: the NVIDIA driver's library, absent without one
    except ImportError:
        return "nvidia-ml-py is not installed (bash scripts/env.sh installs it)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:  # no libnvidia-ml.so: no NVIDIA driver here
        return f"no NVIDIA driver found (NVML: {e})"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        raw = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        return (driver.decode() if isinstance(driver, bytes) else driver), f"{raw // 1000}.{raw % 1000 // 10}"
    finally:
        pynvml.nvmlShutdown()


def cuda_report() -> CudaReport:
    """What CUDA can do here, and if nothing, the one thing to install or set."""
    report = CudaReport(torch=torch.__version__, torch_cuda=torch.version.cuda)
    if report.torch_cuda is None:
        report.problem = f"torch {torch.__version__} is a CPU build; install the CUDA build of the lockfile (bash scripts/env.sh)"
        return report
    nvml = _nvml()
    if isinstance(nvml, str):
        report.problem = f"{nvml}; run on a GPU node with an NVIDIA driver >= {_min_driver(report.torch_cuda)}"
        return report
    report.driver, report.driver_cuda = nvml
    # CUDA's minor-version compatibility: a driver of the same CUDA major version runs torch (CUDA 12.8 wheels on
    # a 535 driver, CUDA 12.2); an older major version does not
    driver_major, torch_major = _version_tuple(report.driver_cuda)[0], _version_tuple(report.torch_cuda)[0]
    if driver_major < torch_major:
        other = f", or install the CUDA {driver_major} lock: SECVIT_CUDA={driver_major} bash scripts/env.sh" if driver_major in CUDA_LOCKS else ""
        report.problem = (
            f"NVIDIA driver {report.driver} supports CUDA up to {report.driver_cuda} but torch {torch.__version__} needs "
            f"CUDA {report.torch_cuda}: update the driver to >= {_min_driver(report.torch_cuda)}{other}"
        )
        return report
    if not torch.cuda.is_available():
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        report.problem = (
            f"no GPU is visible (CUDA_VISIBLE_DEVICES={hidden!r}); ask the scheduler for one (--gpus-per-node)"
            if hidden is not None
            else f"torch.cuda.is_available() is False with driver {report.driver}; check that a GPU is allocated to this job"
        )
        return report
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        report.gpus.append(Gpu(i, props.name, (props.major, props.minor), round(props.total_memory / 2**30, 1)))
    report.bf16 = all(g.capability >= (8, 0) for g in report.gpus)
    return report


def _min_driver(cuda: str) -> str:
    major = _version_tuple(cuda)[0]
    return MIN_DRIVER.get(major, f"the release for CUDA {cuda}")


def fatbin_archs(library: Path) -> list[str]:
    """The GPU code in a CUDA shared library: ``sm_XY`` for each cubin, ``compute_XY`` for each PTX.

    Reads the fat binaries that nvcc embeds (magic 0xBA55ED50; each entry's header holds its
    kind, 1 = PTX or 2 = ELF cubin, and its architecture), so it needs no CUDA tools.
    """
    data = library.read_bytes()
    found: set[tuple[int, int]] = set()
    start = data.find(_FATBIN_MAGIC)
    while start != -1 and start + 16 <= len(data):
        _, _, header, size = struct.unpack_from("<IHHQ", data, start)
        pos, end = start + header, min(start + header + size, len(data))
        while header == 16 and pos + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, pos)
            (arch,) = struct.unpack_from("<I", data, pos + 28)
            if kind in (1, 2) and entry_header >= 32:
                found.add((kind, arch))
            if entry_header < 32:
                break
            pos += entry_header + payload
        start = data.find(_FATBIN_MAGIC, start + 4)
    return [("sm_" if kind == 2 else "compute_") + str(arch) for kind, arch in sorted(found, key=lambda x: (x[1], -x[0]))]


def runs_on(archs: list[str], capability: tuple[int, int]) -> bool:
    """Whether code built for ``archs`` runs on a GPU of ``capability``: a cubin of the same major
    and no newer minor, or PTX of no newer architecture (JIT-compiled by the driver)."""
    major, minor = capability
    for arch in archs:
        kind, _, num = arch.partition("_")
        a_major, a_minor = int(num[:-1]), int(num[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


@lru_cache(maxsize=1)
def mmcv_report() -> MmcvReport:
    try:
        import mmcv  # heavy, and its compiled ops may not load: that is the finding
        from mmcv.ops import get_compiling_cuda_version
    except Exception as e:  # noqa: BLE001 - any import failure is the finding
        return MmcvReport(None, None, None, f"mmcv with its ops cannot be imported ({type(e).__name__}: {e}); run bash scripts/env.sh")
    cuda = get_compiling_cuda_version()
    if cuda in ("not available", "", None):
        return MmcvReport(mmcv.__version__, None, None)
    libs = sorted(Path(mmcv.__file__).parent.glob("_ext*.so"))
    archs = fatbin_archs(libs[0]) if libs else None
    return MmcvReport(mmcv.__version__, cuda, archs or None)


def mmcv_problem(report: MmcvReport, gpus: list[Gpu]) -> str | None:
    """Why mmcv's ops cannot run on these GPUs, or None."""
    if report.problem:
        return report.problem
    if report.cuda is None:
        return f"mmcv {report.version} was built without CUDA ops (RoIAlign, NMS would fail on the GPU); rebuild it: {MMCV_CUDA_FIX}"
    if report.archs:
        missing = sorted({g.arch for g in gpus if not runs_on(report.archs, g.capability)})
        if missing:
            want = ";".join(sorted({f"{g.capability[0]}.{g.capability[1]}" for g in gpus}))
            return (
                f"mmcv's CUDA ops are built for {', '.join(report.archs)}, not for this GPU ({', '.join(missing)}); "
                f"rebuild them: TORCH_CUDA_ARCH_LIST='{want}' {MMCV_CUDA_FIX}"
            )
    return None


def allow_cpu(enable: bool = True) -> None:
    """Opt in to running GPU stages on the CPU, for this process and the ones it starts."""
    if enable:
        os.environ[ALLOW_CPU_VAR] = "1"


def cpu_allowed() -> bool:
    return os.environ.get(ALLOW_CPU_VAR, "") not in ("", "0")


def profile_device(params: Path | str, profile: str) -> str:
    """``<profile>.device`` of params.yaml: the device the profile's GPU stages are meant for."""
    device = profile_section(load_params(params), profile, "device")
    if device not in DEVICES:
        raise SecvitError(f"{profile}.device in {params} must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def require_device(stage: str, profile: str, params: Path | str, device: str | None = None, mmcv_ops: bool = False) -> str:
    """Check, before any work, that ``stage`` can run where it is meant to; returns cuda or cpu.

    ``device`` (the stage's ``--device``) overrides ``<profile>.device``. For ``cuda``, CUDA
    must be usable unless the CPU opt-in is set (then the stage warns and runs on the CPU).
    Wherever CUDA is usable the stage runs on it, so ``mmcv_ops`` stages then also need
    mmcv's CUDA ops for the visible GPUs.
    """
    meant = profile_device(params, profile)
    if device is not None and device not in DEVICES:
        raise SecvitError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    wanted = device or meant
    report = cuda_report()
    if wanted == "cpu" and meant == "cuda" and not cpu_allowed():
        raise SecvitError(
            f"the {profile} profile runs {stage} on GPUs; training it on the CPU needs the opt-in --allow-cpu ({ALLOW_CPU_VAR}=1)"
        )
    if wanted == "cuda" and not report.usable:
        if not cpu_allowed():
            raise SecvitError(f"{stage} --profile {profile} needs a GPU: {report.problem} (or opt in to the CPU: --allow-cpu)")
        print(f"warning: {stage} runs on the CPU ({ALLOW_CPU_VAR} is set): {report.problem}", file=sys.stderr)
    if mmcv_ops and report.usable:
        problem = mmcv_problem(mmcv_report(), report.gpus)
        if problem:
            raise SecvitError(f"{stage} --profile {profile}: {problem}")
    return "cuda" if report.usable else "cpu"


def visible_devices() -> int:
    """The devices a stage started here trains on: the visible CUDA GPUs, or (no CUDA) the
    ``SECVIT_CPU_DEVICES`` stand-in count (default 1)."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    raw = os.environ.get(CPU_DEVICES_VAR, "1")
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise SecvitError(f"{CPU_DEVICES_VAR} must be a positive integer, got {raw!r}")
    return count
