"""GPU readiness: mmcv's wheel cache keys, the checks that GPU stages make first, `secvit doctor`.

The CUDA checks (torch's CUDA queries, NVML) are mocked where a test needs a GPU that this
machine lacks; the stages and mmcv are real.
"""

import os
import shutil
import subprocess
import time

import pytest

import secvit.device as device
from conftest import make_project, one_line_error, secvit
from secvit.errors import SecvitError


@pytest.fixture
def project(tmp_path, repo_root, monkeypatch):
    monkeypatch.delenv(device.ALLOW_CPU_VAR, raising=False)
    return make_project(tmp_path / "project", repo_root)


def _no_cuda() -> bool:
    return not device.cuda_report().usable


needs_no_cuda = pytest.mark.skipif("not _no_cuda()", reason="this machine has usable CUDA")


def _flavour(repo_root, **env) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SECVIT_MMCV_CUDA", "TORCH_CUDA_ARCH_LIST", "SECVIT_CUDA")}
    out = subprocess.run(
        ["bash", "scripts/mmcv_flavour.sh"], cwd=repo_root, env={**base, **env}, capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_cpu_and_cuda_builds_of_mmcv_have_their_own_cache_keys(repo_root):
    cpu = _flavour(repo_root, SECVIT_CUDA="13", SECVIT_MMCV_CUDA="0")
    h100 = _flavour(repo_root, SECVIT_CUDA="13", SECVIT_MMCV_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0")
    default = _flavour(repo_root, SECVIT_CUDA="13", SECVIT_MMCV_CUDA="1")
    assert cpu["MMCV_FLAVOUR"] == "cpu" and cpu["MMCV_WHEEL_DIR"].endswith("/torch-2.14.1-cp311-cpu")
    assert h100["MMCV_FLAVOUR"] == "cuda" and h100["MMCV_WHEEL_DIR"].endswith("/torch-2.14.1-cp311-cu130-sm90")
    # no GPU visible here: the stated default, A100 and H100
    assert (default["MMCV_ARCHS"], default["MMCV_WHEEL_DIR"].rsplit("/", 1)[1]) == ("8.0;9.0", "torch-2.14.1-cp311-cu130-sm80-sm90")
    # the CUDA 12 lock's torch and CUDA name its own builds
    cu12 = _flavour(repo_root, SECVIT_CUDA="12", SECVIT_MMCV_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0")
    assert cu12["MMCV_WHEEL_DIR"].endswith("/torch-2.10.0-cp311-cu128-sm90")
    assert _flavour(repo_root, SECVIT_CUDA="12", SECVIT_MMCV_CUDA="0")["MMCV_WHEEL_DIR"].endswith("/torch-2.10.0-cp311-cpu")
    assert len({cpu["MMCV_WHEEL_DIR"], h100["MMCV_WHEEL_DIR"], default["MMCV_WHEEL_DIR"], cu12["MMCV_WHEEL_DIR"]}) == 4
    if shutil.which("nvidia-smi") is None:  # no GPU: the CPU build unless asked (a CUDA toolchain alone does not count)
        assert _flavour(repo_root)["MMCV_FLAVOUR"] == "cpu"


@needs_no_cuda
def test_paper_pretrain_without_cuda_stops_at_once_with_one_line(project):
    start = time.perf_counter()
    result = secvit(project, "pretrain", "--profile", "paper", "--model", "secvit_tiny")
    elapsed = time.perf_counter() - start
    message = one_line_error(result)
    assert message.startswith("error: pretrain --profile paper needs a GPU: ")
    assert "--allow-cpu" in message
    assert elapsed < 30, elapsed  # interpreter start and imports included; no dataset was touched
    # the opt-in passes the GPU check: the stage goes on to the dataset, which is absent here
    opted = secvit(project, "pretrain", "--profile", "paper", "--model", "secvit_tiny", "--allow-cpu")
    assert opted.returncode == 2
    warning, error = opted.stderr.strip().splitlines()[-2:]
    assert warning.startswith("warning: pretrain runs on the CPU (SECVIT_ALLOW_CPU is set)")
    assert error.startswith("error: ") and "/datasets/imagenet" in error


def _h100_report() -> device.CudaReport:
    """What cuda_report() says on a node with one H100 and a CUDA 13 driver."""
    return device.CudaReport(
        torch="2.14.1+cu130", torch_cuda="13.0", driver="580.65.06", driver_cuda="13.0", gpus=[device.Gpu(0, "NVIDIA H100", (9, 0), 79.1)], bf16=True
    )


@pytest.mark.skipif("device.mmcv_report().cuda is not None", reason="this mmcv has CUDA ops")
def test_detect_with_cuda_visible_and_a_cpu_only_mmcv_stops_naming_the_fix(project, monkeypatch):
    from secvit.pipelines.downstream import detect_stage

    monkeypatch.setattr(device, "cuda_report", _h100_report)
    with pytest.raises(SecvitError) as info:  # before the dataset check: the smoke data does not exist here
        detect_stage("smoke", "secvit_tiny", "mask_rcnn", "1x", project / "params.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("detect --profile smoke: mmcv 2.1.0 was built without CUDA ops")
    assert message.endswith("rebuild it: SECVIT_MMCV_CUDA=1 bash scripts/env.sh")


def test_mmcv_built_for_another_architecture_names_the_one_to_build():
    report = device.MmcvReport("2.1.0", "13.0", ["sm_90"])
    a100 = [device.Gpu(0, "NVIDIA A100", (8, 0), 39.4)]
    problem = device.mmcv_problem(report, a100)
    assert problem == (
        "mmcv's CUDA ops are built for sm_90, not for this GPU (sm_80); "
        "rebuild them: TORCH_CUDA_ARCH_LIST='8.0' SECVIT_MMCV_CUDA=1 bash scripts/env.sh"
    )
    assert device.mmcv_problem(device.MmcvReport("2.1.0", "13.0", ["sm_80"]), [device.Gpu(0, "A10", (8, 6), 22.0)]) is None  # same major
    assert device.mmcv_problem(device.MmcvReport("2.1.0", "13.0", ["sm_80", "compute_80"]), [device.Gpu(0, "H100", (9, 0), 79.1)]) is None  # PTX
    assert device.mmcv_problem(device.MmcvReport("2.1.0", "13.0", ["sm_90"]), [device.Gpu(0, "H100", (9, 0), 79.1)]) is None


def test_a_driver_too_old_for_torch_is_named_with_the_driver_to_install(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(device, "_nvml", lambda: ("550.54.15", "12.4"))
    report = device.cuda_report()
    assert not report.usable
    assert report.problem == (
        f"NVIDIA driver 550.54.15 supports CUDA up to 12.4 but torch {torch.__version__} needs CUDA 13.0: update the driver to >= 580, "
        "or install the CUDA 12 lock: SECVIT_CUDA=12 bash scripts/env.sh"
    )
    # the CUDA 12 lock's torch (CUDA 12.8) on a 535 driver (CUDA 12.2): minor-version compatibility, no driver problem
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(device, "_nvml", lambda: ("535.183.01", "12.2"))
    report = device.cuda_report()
    assert report.driver == "535.183.01" and "update the driver" not in (report.problem or "")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(device, "_nvml", lambda: ("470.82.01", "11.4"))
    assert device.cuda_report().problem.endswith("update the driver to >= 580")  # no lock for CUDA 11
    monkeypatch.setattr(torch.version, "cuda", None)
    assert device.cuda_report().problem.endswith("is a CPU build; install the CUDA build of the lockfile (bash scripts/env.sh)")


@needs_no_cuda
def test_device_settings_and_the_cpu_opt_in(project, monkeypatch):
    params = project / "params.yaml"
    with pytest.raises(SecvitError, match=r"^segment --profile smoke needs a GPU: .*--allow-cpu\)$"):
        device.require_device("segment", "smoke", params, "cuda", mmcv_ops=True)
    with pytest.raises(SecvitError, match=r"^the paper profile runs evaluate on GPUs; .* --allow-cpu \(SECVIT_ALLOW_CPU=1\)$"):
        device.require_device("evaluate", "paper", params, "cpu")
    with pytest.raises(SecvitError, match=r"--device must be one of cpu, cuda, got 'tpu'"):
        device.require_device("pretrain", "smoke", params, "tpu")
    assert device.require_device("pretrain", "smoke", params) == "cpu"
    monkeypatch.setenv(device.ALLOW_CPU_VAR, "1")
    assert device.require_device("pretrain", "paper", params) == "cpu"
    assert device.require_device("evaluate", "paper", params, "cpu") == "cpu"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_fatbin_architectures_are_read_from_a_cuda_library(tmp_path):
    (tmp_path / "k.cu").write_text("__global__ void k(float* x) { x[threadIdx.x] += 1.f; }\nvoid launch(float* x) { k<<<1, 32>>>(x); }\n")
    subprocess.run(
        ["nvcc", "-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
         "k.cu", "-o", "k.so"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    assert device.fatbin_archs(tmp_path / "k.so") == ["sm_80", "sm_90", "compute_90"]
    assert device.fatbin_archs(tmp_path / "k.cu") == []


@needs_no_cuda
def test_doctor_prints_its_table_and_fails_for_the_paper_profile_here(project, repo_root):
    from secvit.doctor.report import lock_in_use

    lock = str(repo_root / lock_in_use())
    result = secvit(project, "doctor", "--profile", "paper", "--lock", lock, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 1, result.stderr[-2000:]
    out = result.stdout
    for check in ("python", "lockfile", "torch CUDA", "NVIDIA driver", "GPUs", "mmcv CUDA ops", "bf16", "data: imagenet", "data: coco", "data: ade20k", "SLURM"):
        assert check in out, check
    assert "the paper profile cannot run here" in out
    assert "/datasets/imagenet does not exist" in out


def test_doctor_compares_the_environment_with_the_lockfile_in_use(repo_root, monkeypatch):
    """The lockfile row names the lock that .venv was installed from and the driver its torch needs."""
    import torch

    from secvit.doctor.report import Report, _environment, lock_in_use, lock_pins

    lock = lock_in_use()
    needs = {"requirements.lock": "CUDA 13.0: NVIDIA driver >= 580", "requirements-cu12.lock": "CUDA 12.8: NVIDIA driver >= 570"}[lock]
    report = Report("smoke")
    monkeypatch.chdir(repo_root)  # the default lock is the repository's
    _environment(report, None)
    rows = {r.check: r for r in report.rows}
    assert rows["lockfile"].status == "ok", rows["lockfile"].detail  # the suite runs in the locked environment
    assert f"packages as pinned in {lock} (torch {lock_pins(repo_root / lock)['torch']}, {needs}" in rows["lockfile"].detail
    assert f"torch {torch.__version__.split('+')[0]}," in rows["packages"].detail and "mmcv 2.1.0" in rows["packages"].detail


def test_the_lock_in_use_is_the_one_env_sh_recorded(tmp_path, monkeypatch):
    import sys

    import torch

    from secvit.doctor import report

    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert report.lock_in_use() == "requirements-cu12.lock"  # nothing recorded: torch's CUDA says which
    monkeypatch.setattr(torch.version, "cuda", None)
    assert report.lock_in_use() == "requirements.lock"
    (tmp_path / ".secvit-lock").write_text("requirements-cu12.lock\n")
    assert report.lock_in_use() == "requirements-cu12.lock"  # a CPU machine installed with SECVIT_CUDA=12


def _cuda_lock(root, tmp_path, driver: str | None = None, recorded: str | None = None, **env) -> dict[str, str] | str:
    """What scripts/cuda_lock.sh picks, with a fake nvidia-smi reporting ``driver`` and a .venv that recorded ``recorded``."""
    work = tmp_path / "repo"
    (work / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "scripts/cuda_lock.sh", work / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if driver:
        smi.write_text(f"#!/bin/sh\necho {driver}\n")
        smi.chmod(0o755)
    shutil.rmtree(work / ".venv", ignore_errors=True)
    if recorded:
        (work / ".venv").mkdir()
        (work / ".venv/.secvit-lock").write_text(recorded + "\n")
    path = f"{bin_dir}:/usr/bin:/bin"  # no real nvidia-smi
    base = {k: v for k, v in os.environ.items() if k != "SECVIT_CUDA"}
    out = subprocess.run(["bash", "scripts/cuda_lock.sh"], cwd=work, env={**base, "PATH": path, **env}, capture_output=True, text=True)
    if out.returncode:
        return out.stderr.strip()
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_the_lock_follows_the_driver_unless_told(repo_root, tmp_path):
    pick = lambda **kw: _cuda_lock(repo_root, tmp_path, **kw)["SECVIT_LOCK"]  # noqa: E731
    assert pick() == "requirements.lock"  # no driver seen
    assert pick(driver="550.54.15") == "requirements-cu12.lock"  # 535-570 drivers run CUDA 12, not 13
    assert pick(driver="580.65.06") == "requirements.lock"
    assert pick(driver="580.65.06", SECVIT_CUDA="12") == "requirements-cu12.lock"
    assert pick(driver="550.54.15", SECVIT_CUDA="13") == "requirements.lock"  # as asked (doctor then names the driver to install)
    # an installed lock stays while the driver can run it: a CPU machine set up with SECVIT_CUDA=12 keeps it
    assert pick(recorded="requirements-cu12.lock") == "requirements-cu12.lock"
    assert pick(recorded="requirements-cu12.lock", driver="580.65.06") == "requirements-cu12.lock"
    assert pick(recorded="requirements.lock", driver="550.54.15") == "requirements-cu12.lock"
    why = _cuda_lock(repo_root, tmp_path, driver="550.54.15")["SECVIT_LOCK_WHY"]
    assert why == "NVIDIA driver 550 < 580 runs CUDA 12, not 13"
    assert _cuda_lock(repo_root, tmp_path, SECVIT_CUDA="11") == "error: SECVIT_CUDA must be 12 or 13 (got '11')"


def _gpu_check(repo_root, out, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/gpu_check.sh", *args, "--out", str(out)], cwd=repo_root, capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if k not in ("SECVIT_GPU_CHECK", "PYTHON")}, "COLUMNS": "200", **env},
    )


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu(repo_root, tmp_path):
    """`bash scripts/gpu_check.sh --device cpu`, as CI runs it: every part but the dense one (on request only) at tiny
    sizes, in the project's environment; one JSON and one markdown table."""
    import json

    from secvit.doctor.gpu_check import COMPILE_LIMITS, FAMILY_MODELS, SECA_LIMITS
    from secvit.doctor.report import lock_in_use

    result = _gpu_check(repo_root, tmp_path, "--device", "cpu")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu_check: project mode (the project's .venv is installed)" in result.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] and (report["device"], report["mode"], report["lock"]) == ("cpu", "project", lock_in_use())
    checks = report["checks"]
    assert all(c["status"] == "pass" for c in checks), [c for c in checks if c["status"] != "pass"]
    seca = [c["figures"] for c in checks if c["part"].startswith("SECA")]
    assert [(f["dtype"], f["image"]) for f in seca] == [("fp32", 64), ("fp32", 72), ("bf16", 64), ("bf16", 72)]
    assert all(f["forward_error"] < SECA_LIMITS[f["dtype"]] and f["backward_error"] < SECA_LIMITS[f["dtype"]] for f in seca)
    families = [c["figures"] for c in checks if "forward and training steps" in c["part"]]
    assert [f["model"] for f in families] == list(FAMILY_MODELS)
    compiled = families[0]  # on the CPU, the first family compiles (Dynamo's graph capture, fullgraph)
    assert compiled["logits_difference"] < COMPILE_LIMITS["logits"] and compiled["compiled_step_ms"] > 0 and compiled["compiled_first_s"] > 0
    assert all("compiled_step_ms" not in f and f["eager_step_ms"] > 0 and f["finite"] for f in families[1:])
    throughput = next(c["figures"] for c in checks if c["part"].startswith("throughput"))
    assert throughput["models"]["swin_tiny_patch4_window7_224"]["paper_a100_img_per_s"] == 1723  # table 2
    assert throughput["models"]["secvit_tiny"]["fp32"]["img_per_s"] > 0
    memory = next(c["figures"] for c in checks if c["part"].startswith("peak memory"))
    assert all(m["mib_per_image"] > 0 for m in memory["models"].values())
    pretrain = next(c for c in checks if "through the real stage" in c["part"])
    assert pretrain["figures"]["steps"] >= 2 and "secvit pretrain --device cpu" in pretrain["part"]
    table = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert table[0].startswith("GPU check on cpu (project, ") and "command: `secvit doctor --run --device cpu`" in table[0]
    assert [line.split(" | ")[0].lstrip("| ") for line in table if line.startswith("| ") and " | pass | " in line] == [c["part"] for c in checks]


def test_the_bare_gpu_check_uses_the_machine_python(repo_root, tmp_path):
    """SECVIT_GPU_CHECK=bare: nothing installed; the machine's Python (here the suite's) runs a copy of the project from
    .gpu-check/site; an interpreter without torch is a one-line error."""
    import json
    import sys
    import venv

    result = _gpu_check(repo_root, tmp_path, "--device", "cpu", "--parts", "seca", SECVIT_GPU_CHECK="bare", PYTHON=sys.executable)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (report["mode"], report["lock"], len(report["checks"])) == ("bare", None, 4)
    assert report["command"] == "secvit doctor --run --device cpu --parts seca"
    assert (repo_root / ".gpu-check/site/secvit/cli/main.py").is_file()
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python with nothing installed
    message = one_line_error(_gpu_check(repo_root, tmp_path, "--device", "cpu", PYTHON=str(bare / "bin/python"), SECVIT_GPU_CHECK="bare"))
    assert message.startswith("error: ") and "lacks torch, timm, typer, rich" in message, message


def test_the_gpu_check_covers_the_smallest_model_of_every_family():
    from conftest import smallest_of_each_family

    from secvit.doctor.gpu_check import FAMILY_MODELS
    from secvit.models import available_models

    assert sorted(FAMILY_MODELS) == smallest_of_each_family(available_models())


def test_doctor_rows_on_a_gpu_node(monkeypatch):
    """The CUDA rows where CUDA works (mocked: an H100 node) with mmcv's CUDA ops built for it, or for another GPU."""
    import secvit.doctor.report as doctor

    monkeypatch.setattr(doctor, "cuda_report", _h100_report)
    monkeypatch.setattr(doctor, "mmcv_report", lambda: device.MmcvReport("2.1.0", "13.0", ["sm_90"]))
    report = doctor.Report("paper")
    doctor._cuda(report, needs_cuda=True, needs_mmcv=True)
    rows = {r.check: (r.status, r.detail) for r in report.rows}
    assert rows["GPUs"] == ("ok", "0: NVIDIA H100 (sm_90, 79.1 GiB)")
    assert rows["NVIDIA driver"] == ("ok", "580.65.06 (supports CUDA up to 13.0)")
    assert rows["mmcv CUDA ops"] == ("ok", "CUDA 13.0: sm_90")
    assert rows["bf16"][0] == "ok" and report.runnable
    monkeypatch.setattr(doctor, "mmcv_report", lambda: device.MmcvReport("2.1.0", "13.0", ["sm_80"]))
    report = doctor.Report("paper")
    doctor._cuda(report, needs_cuda=True, needs_mmcv=True)
    status, detail = {r.check: (r.status, r.detail) for r in report.rows}["mmcv CUDA ops"]
    assert status == "fail" and "TORCH_CUDA_ARCH_LIST='9.0'" in detail and not report.runnable
