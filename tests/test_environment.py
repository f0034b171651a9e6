"""The pinned environment: every locked version is the installed one, and mmcv's compiled ops run."""

from importlib.metadata import version
from pathlib import Path

import pytest
import torch


def test_installed_versions_match_the_lockfile(repo_root):
    """Every pin of the lockfile that .venv was installed from (requirements.lock, or requirements-cu12.lock with
    SECVIT_CUDA=12) is installed at its version (secvit doctor's own check)."""
    from secvit.doctor.report import lock_in_use, lock_mismatches, lock_pins

    pins = lock_pins(repo_root / lock_in_use())
    assert len(pins) > 50 and torch.__version__.split("+")[0] == pins["torch"]
    assert not lock_mismatches(pins), lock_mismatches(pins)
    assert lock_mismatches({"torch": "0.0.1", "no-such-package-x": "1.0"}) == [
        f"torch {version('torch')} != 0.0.1", "no-such-package-x missing"
    ]


def test_mmcv_ops_and_openmmlab_stack():
    import mmcv
    import mmdet
    import mmseg
    from mmcv.ops import nms

    assert (mmcv.__version__, mmdet.__version__, mmseg.__version__) == ("2.1.0", "3.3.0", "1.2.2")
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


@pytest.mark.parametrize("module", ["timm", "fvcore", "dvc", "submitit", "pycocotools", "typer", "rich"])
def test_stack_imports(module):
    __import__(module)


def test_cli_and_pipelines_are_installed_inside_the_secvit_namespace(repo_root, tmp_path):
    """cli/ and pipelines/ install as secvit.cli and secvit.pipelines: no top-level `cli` or
    `pipelines` package that would collide with another distribution's."""
    import subprocess
    import sys

    code = (
        "import importlib.util as u, secvit.cli.main, secvit.orchestrate.slurm as s;"
        "print(u.find_spec('cli'), u.find_spec('pipelines'), secvit.cli.main.__file__, s.__file__, sep='|')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    cli_spec, pipelines_spec, main_file, slurm_file = out.stdout.strip().split("|")
    assert (cli_spec, pipelines_spec) == ("None", "None")
    assert (main_file, slurm_file) == (str(repo_root / "cli/main.py"), str(repo_root / "orchestrate/slurm.py"))
    entry = [e for e in __import__("importlib.metadata").metadata.entry_points(group="console_scripts") if e.name == "secvit"]
    assert [e.value for e in entry] == ["secvit.cli.main:app"]


def _lock_with(lock: Path, dest: Path, **pins: str) -> Path:
    """A copy of ``lock`` with other versions for ``pins``."""
    lines = []
    for line in lock.read_text().splitlines():
        name = line.partition("==")[0]
        lines.append(f"{name}=={pins[name]}" if "==" in line and name in pins else line)
    dest.write_text("\n".join(lines) + "\n")
    return dest


def test_the_cuda_locks_differ_only_where_they_must(repo_root, tmp_path):
    """requirements-cu12.lock is requirements.lock with requirements-cu12.in's torch and torchvision (CUDA 12 wheels):
    every package pinned differently, or in one lock only, is one of those or pulled in by nothing else (the CUDA
    libraries, triton). A pin that drifts elsewhere (numpy here) is caught."""
    from secvit.doctor.report import lock_pins, requirement_names, torch_closure

    main, cu12, roots = repo_root / "requirements.lock", repo_root / "requirements-cu12.lock", requirement_names(repo_root / "requirements-cu12.in")

    def differ(a: Path, b: Path) -> set[str]:
        pa, pb = lock_pins(a), lock_pins(b)
        return {name for name in pa.keys() | pb.keys() if pa.get(name) != pb.get(name)} - torch_closure(a, roots) - torch_closure(b, roots)

    assert roots == {"torch", "torchvision"}
    main_pins, cu12_pins = lock_pins(main), lock_pins(cu12)
    assert main_pins["cuda-toolkit"].startswith("13.") and cu12_pins["nvidia-cuda-runtime-cu12"].startswith("12.")
    assert main_pins["torch"] != cu12_pins["torch"] and main_pins["triton"] != cu12_pins["triton"]
    shared = main_pins.keys() & cu12_pins.keys()
    assert len(shared - torch_closure(main, roots)) > 100  # the closure is torch's own: most packages are outside it
    assert differ(main, cu12) == set()
    drifted = _lock_with(cu12, tmp_path / "drifted.lock", numpy="1.0.0")
    assert differ(main, drifted) == {"numpy"}
