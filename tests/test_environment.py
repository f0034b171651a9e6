"""The pinned environment: every locked version is the installed one, and mmcv's compiled ops run."""

from importlib.metadata import version

import pytest
import torch


def test_installed_versions_match_the_lockfile(repo_root):
    """Every pin of requirements.lock is installed at its version (secvit doctor's own check)."""
    from secvit.doctor import lock_mismatches, lock_pins

    pins = lock_pins(repo_root / "requirements.lock")
    assert len(pins) > 50 and pins["torch"].startswith("2.14.1")
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


@pytest.mark.parametrize("module", ["timm", "fvcore", "dvc", "dvclive", "submitit", "pycocotools", "typer", "rich"])
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
