"""The released-weights lane's inputs: the authors' files as params.yaml names them (missing, another hash, not a
checkpoint: one line each), and the smoke profile's stand-in, in the released state-dict layout."""

import contextlib
import hashlib
import subprocess

import pytest
import torch
from conftest import make_project, one_line_error, secvit_in_process
from released import LAYOUT

from secvit.checkpoint import load_weights
from secvit.errors import SecvitError
from secvit.models.registry import create
from secvit.params import load_params
from secvit.released import URLS, released_file, released_model, write_stand_in


def test_the_stand_in_has_the_released_layout_and_loads(tmp_path):
    """Names and shapes are the released SecViT-T's exactly (tests/data, from the authors' file); raw and EMA weights,
    as theirs; it loads strictly through the model's checkpoint filter, EMA included."""
    path = write_stand_in("secvit_tiny", tmp_path / "secvit_tiny.pth", classes=1000, seed=3)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"model", "model_ema"}
    for weights in saved.values():
        assert {k: tuple(v.shape) for k, v in weights.items()} == {k: tuple(shape) for k, shape in LAYOUT["secvit_tiny"]}
    assert not torch.equal(saved["model"]["head.weight"], saved["model_ema"]["head.weight"])
    model = load_weights(create("secvit_tiny"), path, ema=True)
    assert torch.equal(model.head.fc.weight, saved["model_ema"]["head.weight"].flatten(1))
    with pytest.raises(SecvitError, match="^the authors released SecViT checkpoints only; stvit_small has no released layout"):
        write_stand_in("stvit_small", tmp_path / "stvit.pth", classes=4)


def test_released_names_and_files(tmp_path, repo_root):
    project = make_project(tmp_path, repo_root)
    assert released_model("released:secvit_base") == "secvit_base" and released_model("runs/x/best.pth") is None
    with pytest.raises(SecvitError, match="names no model"):
        released_model("released:")
    params = load_params(project / "params.yaml")
    with pytest.raises(SecvitError, match="^no released checkpoint of stvit_small for the paper profile; add released.checkpoints"):
        released_file(params, "paper", "stvit_small")
    file = project / "released/SecViT-T.pth"
    file.parent.mkdir()
    file.write_bytes(b"weights")
    with contextlib.chdir(project):
        assert released_file(params, "paper", "secvit_tiny") == (file.relative_to(project), hashlib.sha256(b"weights").hexdigest())


def _error(result):
    """The one-line error of a paper-profile command run on this CPU (after the line that warns of it)."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("warning: evaluate runs on the CPU"), result.stderr[-2000:]
    return one_line_error(subprocess.CompletedProcess(result.args, result.returncode, result.stdout, "\n".join(lines[1:])))


def _evaluate_released(project):
    return secvit_in_process(project, "evaluate", "--profile", "paper", "--model", "secvit_tiny", "--checkpoint", "released:secvit_tiny",
                             "--allow-cpu")


def test_bad_released_files_are_one_line_errors(tmp_path, repo_root):
    """Missing: where the authors publish it and where to put it. Another hash: refused, both hashes shown. Not a
    checkpoint: the weights-only loader's one line. Each before any data is read or any model built."""
    project = make_project(tmp_path, repo_root)
    message = _error(_evaluate_released(project))
    assert message == (f"error: released checkpoint released/SecViT-T.pth of secvit_tiny does not exist: the authors publish it at "
                       f"{URLS['secvit_tiny']} (github.com/qhfan/SecViT); download it to released/SecViT-T.pth or set "
                       "released.checkpoints.paper-secvit_tiny.file")
    file = project / "released/SecViT-T.pth"
    file.parent.mkdir()
    file.write_bytes(b"not a checkpoint")
    message = _error(_evaluate_released(project))
    assert message.startswith("error: checkpoint released/SecViT-T.pth is corrupt or not a PyTorch/safetensors file (")
    params = (project / "params.yaml").read_text()
    expected = "ab" * 32
    (project / "params.yaml").write_text(params.replace(
        "file: released/SecViT-T.pth, sha256: null", f"file: released/SecViT-T.pth, sha256: {expected}"))
    message = _error(_evaluate_released(project))
    actual = hashlib.sha256(b"not a checkpoint").hexdigest()
    assert message == (f"error: released checkpoint released/SecViT-T.pth has SHA-256 {actual}, but "
                       f"released.checkpoints.paper-secvit_tiny.sha256 is {expected}: download the file again, or correct the hash")
    message = _error(secvit_in_process(project, "evaluate", "--profile", "paper", "--model", "secvit_small", "--checkpoint",
                                       "released:secvit_tiny", "--allow-cpu"))
    assert message == "error: --checkpoint released:secvit_tiny is a secvit_tiny checkpoint; evaluate it with --model secvit_tiny"
    message = one_line_error(secvit_in_process(project, "data", "--profile", "paper", "--released", "secvit_tiny"))
    assert "the paper profile generates no data" in message
