import subprocess
import sys
import warnings
from pathlib import Path

import pytest

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


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The message of a command that failed with a one-line user error (exit 2), asserting that it did."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]
