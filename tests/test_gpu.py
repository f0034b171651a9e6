"""GPU readiness: mmcv's wheel cache keys, the checks that GPU stages make first, `secvit doctor`.

The CUDA checks (torch's CUDA queries, NVML) are mocked where a test needs a GPU that this
machine lacks; the stages and mmcv are real.
"""

import os
import shutil
import subprocess
import time

import pytest

import secvit.gpu as gpu
from conftest import make_project, one_line_error, secvit
from secvit.errors import SecvitError


@pytest.fixture
def project(tmp_path, repo_root, monkeypatch):
    monkeypatch.delenv(gpu.ALLOW_CPU_VAR, raising=False)
    return make_project(tmp_path / "project", repo_root)


def _no_cuda() -> bool:
    return not gpu.cuda_report().usable


needs_no_cuda = pytest.mark.skipif("not _no_cuda()", reason="this machine has usable CUDA")


def _flavour(repo_root, **env) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SECVIT_MMCV_CUDA", "TORCH_CUDA_ARCH_LIST")}
    out = subprocess.run(
        ["bash", "scripts/mmcv_flavour.sh"], cwd=repo_root, env={**base, **env}, capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_cpu_and_cuda_builds_of_mmcv_have_their_own_cache_keys(repo_root):
    cpu = _flavour(repo_root, SECVIT_MMCV_CUDA="0")
    h100 = _flavour(repo_root, SECVIT_MMCV_CUDA="1", TORCH_CUDA_ARCH_LIST="9.0")
    default = _flavour(repo_root, SECVIT_MMCV_CUDA="1")
    assert cpu["MMCV_FLAVOUR"] == "cpu" and cpu["MMCV_WHEEL_DIR"].endswith("/torch-2.14.1-cp311-cpu")
    assert h100["MMCV_FLAVOUR"] == "cuda" and h100["MMCV_WHEEL_DIR"].endswith("/torch-2.14.1-cp311-cu130-sm90")
    # no GPU visible here: the stated default, A100 and H100
    assert (default["MMCV_ARCHS"], default["MMCV_WHEEL_DIR"].rsplit("/", 1)[1]) == ("8.0;9.0", "torch-2.14.1-cp311-cu130-sm80-sm90")
    assert len({cpu["MMCV_WHEEL_DIR"], h100["MMCV_WHEEL_DIR"], default["MMCV_WHEEL_DIR"]}) == 3
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


def _h100_report() -> gpu.CudaReport:
    """What cuda_report() says on a node with one H100 and a CUDA 13 driver."""
    return gpu.CudaReport(
        torch="2.14.1+cu130", torch_cuda="13.0", driver="580.65.06", driver_cuda="13.0", gpus=[gpu.Gpu(0, "NVIDIA H100", (9, 0), 79.1)], bf16=True
    )


@pytest.mark.skipif("gpu.mmcv_report().cuda is not None", reason="this mmcv has CUDA ops")
def test_detect_with_cuda_visible_and_a_cpu_only_mmcv_stops_naming_the_fix(project, monkeypatch):
    from secvit.pipelines.downstream import detect_stage

    monkeypatch.setattr(gpu, "cuda_report", _h100_report)
    with pytest.raises(SecvitError) as info:  # before the dataset check: the smoke data does not exist here
        detect_stage("smoke", "secvit_tiny", "mask_rcnn", "1x", project / "params.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("detect --profile smoke: mmcv 2.1.0 was built without CUDA ops")
    assert message.endswith("rebuild it: SECVIT_MMCV_CUDA=1 bash scripts/env.sh")


def test_mmcv_built_for_another_architecture_names_the_one_to_build():
    report = gpu.MmcvReport("2.1.0", "13.0", ["sm_90"])
    a100 = [gpu.Gpu(0, "NVIDIA A100", (8, 0), 39.4)]
    problem = gpu.mmcv_problem(report, a100)
    assert problem == (
        "mmcv's CUDA ops are built for sm_90, not for this GPU (sm_80); "
        "rebuild them: TORCH_CUDA_ARCH_LIST='8.0' SECVIT_MMCV_CUDA=1 bash scripts/env.sh"
    )
    assert gpu.mmcv_problem(gpu.MmcvReport("2.1.0", "13.0", ["sm_80"]), [gpu.Gpu(0, "A10", (8, 6), 22.0)]) is None  # same major
    assert gpu.mmcv_problem(gpu.MmcvReport("2.1.0", "13.0", ["sm_80", "compute_80"]), [gpu.Gpu(0, "H100", (9, 0), 79.1)]) is None  # PTX
    assert gpu.mmcv_problem(gpu.MmcvReport("2.1.0", "13.0", ["sm_90"]), [gpu.Gpu(0, "H100", (9, 0), 79.1)]) is None


def test_a_driver_too_old_for_torch_is_named_with_the_driver_to_install(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(gpu, "_nvml", lambda: ("550.54.15", "12.4"))
    report = gpu.cuda_report()
    assert not report.usable
    assert report.problem == (
        f"NVIDIA driver 550.54.15 supports CUDA up to 12.4 but torch {torch.__version__} needs CUDA 13.0: update the driver to >= 580"
    )
    monkeypatch.setattr(torch.version, "cuda", None)
    assert gpu.cuda_report().problem.endswith("is a CPU build; install the CUDA build of the lockfile (bash scripts/env.sh)")


@needs_no_cuda
def test_device_settings_and_the_cpu_opt_in(project, monkeypatch):
    params = project / "params.yaml"
    with pytest.raises(SecvitError, match=r"^segment --profile smoke needs a GPU: .*--allow-cpu\)$"):
        gpu.require_device("segment", "smoke", params, "cuda", mmcv_ops=True)
    with pytest.raises(SecvitError, match=r"^the paper profile runs evaluate on GPUs; .* --allow-cpu \(SECVIT_ALLOW_CPU=1\)$"):
        gpu.require_device("evaluate", "paper", params, "cpu")
    with pytest.raises(SecvitError, match=r"--device must be one of cpu, cuda, got 'tpu'"):
        gpu.require_device("pretrain", "smoke", params, "tpu")
    assert gpu.require_device("pretrain", "smoke", params) == "cpu"
    monkeypatch.setenv(gpu.ALLOW_CPU_VAR, "1")
    assert gpu.require_device("pretrain", "paper", params) == "cpu"
    assert gpu.require_device("evaluate", "paper", params, "cpu") == "cpu"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc")
def test_fatbin_architectures_are_read_from_a_cuda_library(tmp_path):
    (tmp_path / "k.cu").write_text("__global__ void k(float* x) { x[threadIdx.x] += 1.f; }\nvoid launch(float* x) { k<<<1, 32>>>(x); }\n")
    subprocess.run(
        ["nvcc", "-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
         "k.cu", "-o", "k.so"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    assert gpu.fatbin_archs(tmp_path / "k.so") == ["sm_80", "sm_90", "compute_90"]
    assert gpu.fatbin_archs(tmp_path / "k.cu") == []


@needs_no_cuda
def test_doctor_prints_its_table_and_fails_for_the_paper_profile_here(project, repo_root):
    lock = str(repo_root / "requirements.lock")
    result = secvit(project, "doctor", "--profile", "paper", "--lock", lock, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 1, result.stderr[-2000:]
    out = result.stdout
    for check in ("python", "lockfile", "torch CUDA", "NVIDIA driver", "GPUs", "mmcv CUDA ops", "bf16", "data: imagenet", "data: coco", "data: ade20k", "SLURM"):
        assert check in out, check
    assert "the paper profile cannot run here" in out
    assert "/datasets/imagenet does not exist" in out


def test_doctor_compares_the_environment_with_the_lockfile(repo_root):
    from secvit.doctor import Report, _environment

    report = Report("smoke")
    _environment(report, repo_root / "requirements.lock")
    rows = {r.check: r for r in report.rows}
    assert rows["lockfile"].status == "ok", rows["lockfile"].detail  # the suite runs in the locked environment
    assert "torch 2.14.1" in rows["packages"].detail and "mmcv 2.1.0" in rows["packages"].detail


def test_the_gpu_check_seca_part_runs_on_the_cpu():
    from secvit.gpu_check import SIZES, check_seca

    checks = check_seca("cpu", SIZES["cpu"])
    assert [c.passed for c in checks] == [True, True], [c.detail for c in checks]
    assert "(divisible)" in checks[0].part and "(non-divisible)" in checks[1].part


def test_doctor_rows_on_a_gpu_node(monkeypatch):
    """The CUDA rows where CUDA works (mocked: an H100 node) with mmcv's CUDA ops built for it, or for another GPU."""
    import secvit.doctor as doctor

    monkeypatch.setattr(gpu, "cuda_report", _h100_report)
    monkeypatch.setattr(gpu, "mmcv_report", lambda: gpu.MmcvReport("2.1.0", "13.0", ["sm_90"]))
    report = doctor.Report("paper")
    doctor._cuda(report, needs_cuda=True, needs_mmcv=True)
    rows = {r.check: (r.status, r.detail) for r in report.rows}
    assert rows["GPUs"] == ("ok", "0: NVIDIA H100 (sm_90, 79.1 GiB)")
    assert rows["NVIDIA driver"] == ("ok", "580.65.06 (supports CUDA up to 13.0)")
    assert rows["mmcv CUDA ops"] == ("ok", "CUDA 13.0: sm_90")
    assert rows["bf16"][0] == "ok" and report.runnable
    monkeypatch.setattr(gpu, "mmcv_report", lambda: gpu.MmcvReport("2.1.0", "13.0", ["sm_80"]))
    report = doctor.Report("paper")
    doctor._cuda(report, needs_cuda=True, needs_mmcv=True)
    status, detail = {r.check: (r.status, r.detail) for r in report.rows}["mmcv CUDA ops"]
    assert status == "fail" and "TORCH_CUDA_ARCH_LIST='9.0'" in detail and not report.runnable
