"""timm's model contract, for every model this project registers.

Parametrized over ``available_models()``, so families registered later are covered
automatically, and over the table-6 ablations of SecViT-T (``secvit_tiny+no_lce``: the model
built with that ablation's options). Inputs are small (64x64: strides 4..32 give 16, 8, 4, 2) and each
model is built once per session; tests that change a model work on a copy.

As timm's own suite limits its costly tests (backward, torch.fx) by model size, the whole contract runs
on :data:`FULL`: the smallest variant of each family (the bigger ones are the same classes at other widths
and depths), SecViT-S and the ablations. Every variant gets construction, the default cfg at its input size,
forward, and ``features_only``.
"""

import copy
import functools
import math

import pytest
import timm
import torch
from conftest import model_family, smallest_of_each_family
from timm.models._features import FeatureGetterNet
from timm.models._features_fx import FeatureGraphNet, create_feature_extractor

from secvit.errors import SecvitError
from secvit.models import available_models
from secvit.models.variants import ABLATIONS, ablation_options

ABLATED = [f"secvit_tiny+{ablation}" for ablation in ABLATIONS]
MODELS = available_models() + ABLATED
SIZE = 64


FULL = sorted({*smallest_of_each_family(available_models()), "secvit_small"}) + ABLATED
full_contract = pytest.mark.parametrize("name", FULL)  # overrides the `name` fixture: these models only


def _create(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model`` of a registered name, or of ``<model>+<ablation>`` with the ablation's options."""
    model, _, ablation = name.partition("+")
    return timm.create_model(model, **(ablation_options(ablation) if ablation else {}), **kwargs)


@functools.cache
def _pristine(name: str) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _create(name).eval()


@pytest.fixture(params=MODELS)
def name(request) -> str:
    return request.param


@pytest.fixture
def model(name) -> torch.nn.Module:
    """A fresh copy of ``name`` in eval mode (seeded random weights)."""
    return copy.deepcopy(_pristine(name))


def _x(batch: int = 1, height: int = SIZE, width: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def _spatial(size: int, reduction: int) -> int:
    return math.ceil(size / reduction)


def _stage_infos(model) -> list[dict]:
    return [dict(info) for info in model.feature_info]


def test_every_model_is_covered():
    assert "secvit_tiny" in MODELS and len(MODELS) >= 4
    families = {model_family(name) for name in available_models()}
    assert {model_family(name) for name in FULL if "+" not in name} == families  # each family: the whole contract
    assert {"secvit_tiny", "secvit_small", "sec_fastervit_0", "stvit_small", "pacavit_tiny"} <= set(FULL)


@full_contract
def test_forward_backward(name):
    """Training mode with drop path, a non-square input: every parameter gets a finite gradient."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _create(name, num_classes=7, drop_path_rate=0.1).train()
        out = model(_x(batch=2, width=96))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_pretrained_cfg(model, name):
    cfg = model.pretrained_cfg
    assert model.default_cfg == cfg
    assert cfg["architecture"] == name.partition("+")[0] and cfg["tag"] == "in1k"
    assert timm.models.get_pretrained_cfg(cfg["architecture"]).input_size == cfg["input_size"]
    channels, height, width = cfg["input_size"]
    assert channels == 3 and not cfg.get("fixed_input_size", False)
    stride = model.feature_info[-1]["reduction"]
    assert tuple(cfg["pool_size"]) == (_spatial(height, stride), _spatial(width, stride))
    assert cfg["num_classes"] == model.num_classes == 1000
    assert cfg["interpolation"] == "bicubic" and 0 < cfg["crop_pct"] <= 1
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state
    assert state[f"{cfg['first_conv']}.weight"].shape[1] == 3
    assert state[f"{cfg['classifier']}.weight"].shape == (1000, model.head_hidden_size)
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    assert model.num_features == model.feature_info[-1]["num_chs"] > 0 and model.head_hidden_size > 0
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]
    assert all(model.get_submodule(info["module"]) is stage for info, stage in zip(model.feature_info, model.stages))


@pytest.mark.slow
def test_pool_size_at_default_input_size(model):
    """What timm's test_model_default_cfgs checks: unpooled maps at input_size are pool_size."""
    cfg = model.pretrained_cfg
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, *cfg["input_size"]))
    assert feats.shape == (1, model.num_features, *cfg["pool_size"])


def test_forward_features_and_head(model):
    with torch.no_grad():
        feats = model.forward_features(_x())
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    side = _spatial(SIZE, 32)
    assert feats.shape == (1, model.num_features, side, side)
    assert pre.shape == (1, model.head_hidden_size)
    assert logits.shape == (1, model.num_classes)


@full_contract
def test_reset_classifier(model):
    x = _x()
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
        pooled = model(x)
        torch.testing.assert_close(pooled, pre)

        model.reset_classifier(0, "")
        maps = model(x)
        side = _spatial(SIZE, 32)
        assert maps.shape == (1, model.head_hidden_size, side, side)
        torch.testing.assert_close(maps.mean((2, 3)), pooled)

        model.reset_classifier(5)  # keeps the (disabled) pooling: per-position logits
        dense = model(x)
        assert dense.shape == (1, 5, side, side)
        dense_fc = model.get_classifier().state_dict()
        model.reset_classifier(5, "avg")
        model.get_classifier().load_state_dict(dense_fc)  # same classifier weights, pooled
        logits = model(x)
        assert logits.shape == (1, 5)
        torch.testing.assert_close(logits, dense.mean((2, 3)), rtol=1e-5, atol=1e-5)
        model.reset_classifier(5, "max")
        assert model(x).shape == (1, 5)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(0, "catavgmax")


@full_contract
@pytest.mark.slow
def test_no_classifier_no_pool_from_create_model(name):
    model = _create(name, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        out = model(_x())
    side = _spatial(SIZE, 32)
    assert out.shape == (1, model.head_hidden_size, side, side)
    assert model.num_classes == 0


@full_contract
def test_forward_intermediates(model):
    x = _x(height=SIZE, width=96)
    infos = _stage_infos(model)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(infos) == 4
        for info, t in zip(infos, inter):
            r = info["reduction"]
            assert t.shape == (1, info["num_chs"], _spatial(SIZE, r), _spatial(96, r))
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(final, inter[-1], rtol=0, atol=0)

        def same(got, want):
            assert len(got) == len(want)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0)

        same(model.forward_intermediates(x, indices=2)[1], inter[2:])
        same(model.forward_intermediates(x, indices=[0, -1])[1], [inter[0], inter[3]])
        same(model.forward_intermediates(x, indices=(1,), intermediates_only=True), [inter[1]])
        same(model.forward_intermediates(x, norm=True)[1], inter)  # no final norm: norm changes nothing
        early, early_inter = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
        same(early_inter, inter[:2])
        torch.testing.assert_close(early, inter[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(AssertionError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


@full_contract
def test_forward_intermediates_with_grad_checkpointing(model):
    x = _x()
    with torch.no_grad():
        want = model.forward_intermediates(x)
    model.set_grad_checkpointing()
    got = model.forward_intermediates(x)
    torch.testing.assert_close(got[0], want[0])
    got[0].mean().backward()


@full_contract
def test_prune_intermediate_layers(model):
    x = _x()
    with torch.no_grad():
        _, inter = model.forward_intermediates(x)
    assert model.prune_intermediate_layers([0, -3]) == [0, 1]
    assert len(model.stages) == 2 and not [k for k in model.state_dict() if k.startswith(("stages.2.", "stages.3."))]
    assert model.num_features == model.head_hidden_size == model.feature_info[1]["num_chs"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), inter[1], rtol=0, atol=0)  # head pruned: unpooled
        final, kept = model.forward_intermediates(x, indices=[0, 1])
        torch.testing.assert_close(final, inter[1], rtol=0, atol=0)
        for a, b in zip(kept, inter[:2]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        model.reset_classifier(3, "avg")  # a classifier on the pruned features still works
        assert model(x).shape == (1, 3)


@full_contract
def test_prune_keeps_head_when_asked(model):
    assert model.prune_intermediate_layers(2, prune_head=False) == [2, 3]
    assert len(model.stages) == 4
    with torch.no_grad():
        assert model(_x()).shape == (1, model.num_classes)


def test_features_only(name):
    """Default wrapper (forward_intermediates getter) with out_indices; same maps as forward_intermediates."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        feats = _create(name, features_only=True, out_indices=(1, 3)).eval()
    assert isinstance(feats, FeatureGetterNet)
    infos = _stage_infos(_pristine(name))
    assert feats.feature_info.channels() == [infos[1]["num_chs"], infos[3]["num_chs"]]
    assert feats.feature_info.reduction() == [8, 32]
    x = _x()
    with torch.no_grad():
        out = feats(x)
        want = _pristine(name).forward_intermediates(x, indices=(1, 3), intermediates_only=True)
    assert isinstance(out, list) and len(out) == 2
    for a, b in zip(out, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(SecvitError, match=r"3-channel \(RGB\)"):
        feats(torch.randn(1, 1, SIZE, SIZE))


@full_contract
def test_features_only_prunes_unused_stages(name):
    feats = _create(name, features_only=True, out_indices=(0, 1))
    assert len(feats.model.stages) == 2 and isinstance(feats.model.head.fc, torch.nn.Identity)


def _clusters(model) -> bool:
    """True for models that cluster tokens (more than one cluster in some stage)."""
    return any(c > 1 for c in getattr(model, "clusters", ()) or ())


def _assert_traced_matches(graph_module, model, x):
    with torch.no_grad():
        want, got = model(x), graph_module(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@full_contract
def test_fx_symbolic_trace(model):
    traced = torch.fx.symbolic_trace(model)
    # two input sizes: the graph must not be specialised to one (72x56 needs padded clusters)
    _assert_traced_matches(traced, model, _x())
    _assert_traced_matches(traced, model, _x(height=72, width=56))
    with pytest.raises(SecvitError, match=r"3-channel \(RGB\)"):
        traced(torch.randn(1, 4, SIZE, SIZE))
    if _clusters(model):  # models with a minimum input size keep their one-line error when traced
        with pytest.raises(SecvitError, match=r"too small: stage \d would have \d+ tokens for \d+ clusters"):
            traced(torch.randn(1, 3, 8, 8))


@full_contract
@pytest.mark.slow
def test_fx_feature_extractor(model):
    """timm's fx extractor: named stage outputs, and the features_only feature_cls='fx' wrapper."""
    x = _x()
    with torch.no_grad():
        want = model.forward_intermediates(x, intermediates_only=True)
        extractor = create_feature_extractor(model, return_nodes={"stages.1": "s1", "stages.3": "s3"})
        got = extractor(x)
        assert list(got) == ["s1", "s3"]
        torch.testing.assert_close(got["s1"], want[1], rtol=0, atol=0)
        torch.testing.assert_close(got["s3"], want[3], rtol=0, atol=0)

        graph_net = FeatureGraphNet(model, out_indices=(0, 2))
        for a, b in zip(graph_net(x), [want[0], want[2]]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert graph_net.feature_info.channels() == [model.feature_info[0]["num_chs"], model.feature_info[2]["num_chs"]]
    if _clusters(model):
        with pytest.raises(SecvitError, match=r"too small"):
            graph_net(torch.randn(1, 3, 8, 8))


@full_contract
@pytest.mark.slow
def test_features_only_fx_from_create_model(name):
    feats = _create(name, features_only=True, feature_cls="fx", out_indices=(1, 2)).eval()
    assert isinstance(feats, FeatureGraphNet)
    with torch.no_grad():
        out = feats(_x())
    assert [t.shape[1] for t in out] == feats.feature_info.channels()
    assert [t.shape[-1] for t in out] == [_spatial(SIZE, r) for r in feats.feature_info.reduction()]
