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
