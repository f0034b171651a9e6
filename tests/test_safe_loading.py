"""Weights files are loaded safely by every loader of ours, also after the OpenMMLab adapter is imported.

The malicious file is a real ``torch.save`` file whose pickle calls ``builtins.getattr`` to fetch a
method and then calls it: loaded unsafely, it would create a marker file. Every loader must refuse it
with a one-line error and leave no marker.
"""

from pathlib import Path

import pytest
import torch
from conftest import make_project, one_line_error, secvit_in_process

import secvit.downstream.backbone  # noqa: F401  (the adapter: importing it must weaken nothing)
import secvit.downstream.hooks  # noqa: F401
from secvit.errors import SecvitError


class _TouchOnLoad:
    """Unpickles by calling ``Path(marker).touch()``: the bound method pickles through ``getattr``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


@pytest.fixture
def evil(tmp_path):
    """A checkpoint of real secvit_tiny weights with one poisoned entry, and the marker it would create."""
    import timm

    marker = tmp_path / "pwned"
    state = timm.create_model("secvit_tiny", num_classes=4).state_dict()
    path = tmp_path / "evil.pth"
    torch.save({"model": state, "note": _TouchOnLoad(marker)}, path)
    return path, marker


def _refused(message: str, path: Path) -> None:
    assert "builtins.getattr" in message and "refused" in message and str(path) in message, message


def test_adapter_import_allows_nothing_process_wide():
    allowed = {getattr(g, "__qualname__", str(g)) for g in torch.serialization.get_safe_globals()}
    assert "getattr" not in allowed and "HistoryBuffer" not in allowed, allowed


def test_every_loader_refuses_a_pickle_that_calls_getattr(evil, tmp_path, repo_root):
    import timm

    from secvit.downstream.backbone import SecvitBackbone

    path, marker = evil
    # --weights of `secvit detect` / `secvit segment`: the backbone adapter's pretrained weights
    with pytest.raises(SecvitError) as info:
        SecvitBackbone(model_name="secvit_tiny", pretrained=str(path))
    _refused(str(info.value), path)
    # pretrained_cfg_overlay: timm's own loading of a file named in the pretrained config
    with pytest.raises(SecvitError) as info:
        timm.create_model("secvit_tiny", pretrained=True, num_classes=4, pretrained_cfg_overlay={"file": str(path)})
    _refused(str(info.value), path)
    assert "\n" not in str(info.value)
    project = make_project(tmp_path / "project", repo_root)
    # secvit evaluate --checkpoint, secvit convert
    for args in (
        ("evaluate", "--model", "secvit_tiny", "--checkpoint", str(path)),
        ("convert", str(path), str(tmp_path / "out.safetensors"), "--model", "secvit_tiny"),
    ):
        _refused(one_line_error(secvit_in_process(project, *args)), path)
    assert not marker.exists()  # nothing ran
    assert not (tmp_path / "out.safetensors").exists()
