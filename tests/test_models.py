"""SecViT models: exact architecture, timm interface, released checkpoints, bad input."""

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from conftest import make_project, num_params, one_line_error, secvit_in_process
from conftest import secvit as secvit_cli
from released import released_forward, released_state_dict

import secvit
from secvit.checkpoint import load_weights
from secvit.errors import SecvitError
from secvit.models import available_models, checkpoint_filter_fn, create

PARAMS = {"secvit_tiny": 14_981_800, "secvit_small": 26_776_104, "secvit_base": 54_682_776, "secvit_large": 96_495_096}
# fvcore GFLOPs at 224x224 from the notes: (all ops, without attention matmuls)
GFLOPS = {"secvit_tiny": (2.72, 2.51), "secvit_small": (4.76, 4.37), "secvit_base": (10.41, 9.68), "secvit_large": (19.39, 18.36)}


def test_importing_secvit_registers_all_variants():
    assert set(PARAMS) <= set(available_models())  # the comparison backbones are tested in test_peers.py
    assert secvit.__version__


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_exact_parameter_counts(name):
    """(The forward pass at 224x224 of every variant: test_model_contract.py's default-cfg test.)"""
    assert num_params(name) == PARAMS[name]


# Input sizes whose token counts no stage's clusters divide (32, 8, 2): COCO's 800x1333 for SecViT-T,
# an odd 330x550 (83x138, 42x69, 21x35, 11x18 tokens) for the others, at a sixth of the cost.
DETECTION_SIZES = {
    (800, 1333): [(200, 334), (100, 167), (50, 84), (25, 42)],
    (330, 550): [(83, 138), (42, 69), (21, 35), (11, 18)],
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,size", [("secvit_tiny", (800, 1333)), ("secvit_small", (330, 550)), ("secvit_base", (330, 550)), ("secvit_large", (330, 550))]
)
def test_forward_at_detection_size(name, size):
    """Detection-sized inputs: no stage's token count is divisible by its clusters."""
    model = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    assert [f.shape[-2:] for f in feats] == DETECTION_SIZES[size]
    assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.parametrize("name,size", [("secvit_tiny", 224), ("secvit_base", 64)])
def test_matches_released_architecture(name, size):
    """Loaded through the checkpoint filter, our model computes what the released model computes."""
    state = released_state_dict(name, dtype=torch.float64)
    model = timm.create_model(name).double().eval()
    model.load_state_dict(checkpoint_filter_fn(state, model))
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), released_forward(state, name, x)
    assert ours.std() > 1e-3
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9 * theirs.abs().max().item())


def test_timm_interface():
    model = timm.create_model("secvit_tiny", num_classes=10, drop_path_rate=0.2).eval()
    x = torch.randn(2, 3, 96, 128)
    feats = model.forward_features(x)
    assert feats.shape == (2, 512, 3, 4)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 1024)
    assert model.forward_head(feats).shape == (2, 10)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert model.pretrained_cfg["interpolation"] == "bicubic"
    assert timm.models.get_pretrained_cfg("secvit_small").input_size == (3, 224, 224)


def test_features_only_out_indices():
    model = timm.create_model("secvit_tiny", features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.channels() == [128, 512]
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 28, 28), (1, 512, 7, 7)]


def _save_released(tmp_path, name, **keys):
    path = tmp_path / f"{name}.pth"
    torch.save(keys, path)
    return path


def _double(state):
    return {k: v.double() if v.is_floating_point() else v for k, v in state.items()}


def test_pretrained_released_checkpoint_and_convert(tmp_path):
    """Float64 forward passes: in float32, near-tied similarity scores may order differently."""
    raw, ema = released_state_dict("secvit_tiny", seed=1), released_state_dict("secvit_tiny", seed=2)
    path = _save_released(tmp_path, "secvit_tiny", model=raw, model_ema=ema)
    model = timm.create_model("secvit_tiny", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    model = model.double().eval()  # timm's convention: EMA weights when the checkpoint has them
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, released_forward(_double(ema), "secvit_tiny", x))

    out = tmp_path / "tiny.safetensors"
    result = secvit_cli(tmp_path, "convert", str(path), str(out), "--model", "secvit_tiny", "--ema")
    assert result.returncode == 0, result.stderr
    converted = timm.create_model("secvit_tiny", pretrained=True, pretrained_cfg_overlay={"file": str(out)})
    with torch.no_grad():
        torch.testing.assert_close(converted.double().eval()(x), logits, rtol=0, atol=0)

    bare = _save_released(tmp_path, "bare", **raw)  # a bare state dict works too
    raw_model = load_weights(create("secvit_tiny"), bare).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(raw_model(x), released_forward(_double(raw), "secvit_tiny", x))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda sd: sd.pop("layers.1.blocks.0.attn.qkv.weight"), r"missing stages\.1\.blocks\.0\.attn\.qkv\.weight"),
        (lambda sd: sd.__setitem__("layers.0.blocks.0.attn.extra", torch.zeros(1)), r"unexpected stages\.0\.blocks\.0\.attn\.extra"),
        (lambda sd: sd.__setitem__("head.weight", torch.zeros(10, 1024, 1, 1)), r"wrong shape head\.fc\.weight \(10, 1024\) vs \(1000, 1024\)"),
    ],
)
def test_wrong_checkpoint_names_the_keys(tmp_path, edit, message):
    state = released_state_dict("secvit_tiny")
    edit(state)
    path = _save_released(tmp_path, "bad", model=state)
    with pytest.raises(SecvitError, match=message) as err:
        timm.create_model("secvit_tiny", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert "\n" not in str(err.value)


def test_checkpoint_of_another_variant_is_rejected(tmp_path):
    path = _save_released(tmp_path, "small", model=released_state_dict("secvit_small"))
    with pytest.raises(SecvitError, match="does not match") as err:
        load_weights(create("secvit_tiny"), path)
    assert "\n" not in str(err.value)


def test_corrupt_checkpoint_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(SecvitError, match="corrupt or not a PyTorch"):
        load_weights(create("secvit_tiny"), path)
    with pytest.raises(SecvitError, match="does not exist"):
        load_weights(create("secvit_tiny"), tmp_path / "missing.pth")


def test_bad_input_errors():
    model = create("secvit_tiny").eval()
    with pytest.raises(SecvitError, match=r"too small: stage 1 would have 16 tokens for 32 clusters; use images of at least 21x21"):
        model(torch.randn(1, 3, 16, 16))
    for channels in (1, 4):
        with pytest.raises(SecvitError, match="3-channel \\(RGB\\)"):
            model(torch.randn(1, channels, 64, 64))
    with pytest.raises(SecvitError, match="unknown model 'secvit_huge'; choose one of: .*secvit_base, secvit_large, secvit_small, secvit_tiny"):
        create("secvit_huge")
    model(torch.randn(1, 3, 21, 21))  # the smallest allowed size runs


def _cli(*args):
    return secvit_cli(Path.cwd(), *args)


def test_cli_errors_are_one_line():
    for args, message in [
        (("complexity", "secvit_huge"), "error: unknown model 'secvit_huge'; choose one of:"),
        (("complexity", "secvit_tiny", "--img-size", "16"), "error: input 16x16 is too small"),
        (("convert", "/nonexistent.pth", "/tmp/x.safetensors", "--model", "secvit_tiny"), "error: checkpoint /nonexistent.pth does not exist"),
    ]:
        assert one_line_error(secvit_in_process(Path.cwd(), *args)).startswith(message)
    assert one_line_error(_cli("complexity", "secvit_huge")).startswith("error: unknown model")  # the real command too


def _zip_not_torch(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.txt", "not a tensor")


def _truncated(path):
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])


NOT_CHECKPOINTS = {
    "text": (lambda p: p.write_text("these are not weights\n"), "neither a zip archive nor a binary pickle"),
    "code as text": (lambda p: p.write_text("cos\nsystem\n(S'echo unpickled'\ntR."), "neither a zip archive nor a binary pickle"),
    "random bytes": (lambda p: p.write_bytes(bytes(range(7, 256)) * 8), "neither a zip archive nor a binary pickle"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "torch.save of a list": (lambda p: torch.save([torch.zeros(1)], p), "holds a list, expected a dict of tensors"),
    "pickle of a list": (lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=4)), "corrupt or not a PyTorch"),
    "zip, not torch": (_zip_not_torch, "a zip archive without data.pkl"),
    "truncated": (_truncated, "a truncated or damaged zip archive"),
}


@pytest.mark.parametrize("case", sorted(NOT_CHECKPOINTS))
def test_not_a_checkpoint_is_one_line(case, tmp_path, repo_root):
    """convert and evaluate turn any file that is not a checkpoint into `error: ...` (exit 2).

    In this process (the command line's code, without a start-up per case); the first case also
    as the real command."""
    write, expected = NOT_CHECKPOINTS[case]
    project = make_project(tmp_path / "project", repo_root)
    bad = project / "bad.pth"
    write(bad)
    run = secvit_cli if case == sorted(NOT_CHECKPOINTS)[0] else secvit_in_process
    for args in (
        ("convert", "bad.pth", "out.safetensors", "--model", "secvit_tiny"),
        ("evaluate", "--checkpoint", "bad.pth", "--model", "secvit_tiny", "--profile", "smoke"),
    ):
        message = one_line_error(run(project, *args))
        assert message.startswith("error: checkpoint bad.pth ") and expected in message, (args, message)
    assert not (project / "out.safetensors").exists() and not (project / "results").exists()


def test_cli_complexity_json_secvit_small():
    result = _cli("complexity", "secvit_small", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "secvit_small" and data["params"] == 26_776_104
    assert data["gflops"] == pytest.approx(4.76, rel=0.01)
    assert data["gflops_no_attn"] == pytest.approx(4.37, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["secvit_tiny", "secvit_base", "secvit_large"])
def test_complexity_matches_notes(name):
    from secvit.complexity import measure

    result = measure(name)
    assert result.params == PARAMS[name]
    assert result.gflops == pytest.approx(GFLOPS[name][0], rel=0.01)
    assert result.gflops_no_attn == pytest.approx(GFLOPS[name][1], rel=0.01)
