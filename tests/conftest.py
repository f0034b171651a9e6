import contextlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # test helpers (released.py, ...)
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


SECVIT = str(Path(sys.executable).with_name("secvit"))


def make_project(dest: Path, repo_root: Path) -> Path:
    """A scratch working directory holding the repository's params.yaml (stages write below it)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "params.yaml").write_text((repo_root / "params.yaml").read_text())
    return dest


def secvit(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the `secvit` command line in ``project``."""
    return subprocess.run([SECVIT, *args], cwd=project, capture_output=True, text=True, **kwargs)


def secvit_in_process(project: Path, *args: str) -> subprocess.CompletedProcess:
    """The `secvit` command line run inside this process (no interpreter start-up: for tests of many
    error cases; :func:`secvit` runs the real command); the result as :func:`secvit` returns it."""
    from typer.testing import CliRunner

    from secvit.cli.main import app

    with contextlib.chdir(project):
        result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess([SECVIT, *args], result.exit_code, result.stdout, result.stderr)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The message of a command that failed with a one-line user error (exit 2), asserting that it did."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def tool_env() -> dict[str, str]:
    """The environment with this interpreter's bin/ first on PATH, so `secvit`, `dvc` and `torchrun` are ours
    (the environment the pipeline gives its stage commands)."""
    from secvit.orchestrate.env import stage_env

    return stage_env()


def num_params(name: str) -> int:
    """Parameters of registered model ``name``, built on the meta device (no weights allocated or initialised)."""
    import timm
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name).parameters())


def model_family(name: str) -> str:
    """``secvit_tiny`` -> ``secvit``, ``sec_fastervit_0`` -> ``sec_fastervit``."""
    return name.rsplit("_", 1)[0]


def smallest_of_each_family(names: list[str]) -> list[str]:
    """The variant with the fewest parameters of each family among ``names``, sorted."""
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(model_family(name), []).append(name)
    return sorted(min(group, key=num_params) for group in families.values())


def invoke(cwd: Path, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command (dvc, git, secvit, SLURM tools) in ``cwd`` with :func:`tool_env`; with ``check``, assert it succeeded."""
    result = subprocess.run(list(args), cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def edit_params(path: Path, changes: dict[str, Any]) -> None:
    """Set ``changes`` (dotted keys -> values) in the params file ``path``."""
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def scratch_repo(repo_root: Path, dest: Path, untracked: bool = False, params: dict[str, Any] | None = None) -> Path:
    """A fresh git repository (one commit; DVC and DVCLive need one) holding the project's tracked files,
    with ``untracked``: also the new files git does not ignore, except pipeline results (results/ is not
    ignored: experiments commit it); ``params``: dotted keys changed in params.yaml."""
    names = invoke(repo_root, "git", "ls-files", "-z").stdout.split("\0")
    if untracked:
        new = invoke(repo_root, "git", "ls-files", "-z", "--others", "--exclude-standard").stdout.split("\0")
        names += [n for n in new if not n.startswith("results/")]
    for name in filter(None, names):
        if (repo_root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, dest / name)
    if params:
        edit_params(dest / "params.yaml", params)
    invoke(dest, "git", "init", "-q")
    invoke(dest, "git", "add", "-A")
    invoke(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "scratch")
    return dest


# Modules that run for minutes, longest first. scripts/test.sh hands whole modules to its workers in
# collection order (--dist loadscope --no-loadscope-reorder), so these start at once, side by side, and the
# short modules fill in around them; xdist's own order (most tests first) started them last, one worker
# then finishing minutes after the other. The SLURM stop test's three jobs share the node's CPUs
# (OverSubscribe on its partition): the other SLURM module starts after it, beside the smoke DAG.
LONG_MODULES = ["test_slurm_stops.py", "test_pipeline.py", "test_slurm.py", "test_downstream.py", "test_model_contract.py", "test_pretrain.py", "test_models.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_MODULES)))  # stable: a module's own order stays


def trained_steps(work_dir: Path) -> list[list[int]]:
    """The training iterations that each run (the first and every resumed one) of an mmengine stage in ``work_dir``
    logged, in order (its scalars.json, one folder per run)."""
    runs = []
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        rows = [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
        runs.append([r["step"] for r in rows if "loss" in r])
    return runs
