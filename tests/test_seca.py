"""Semantic Equitable Clustering attention: the fast path against the reference (forward and
backward, divisible and non-divisible token counts), the released algorithm, the padding policy,
and the channels-last module pieces (rotary tables, fx and dynamo tracing)."""

import math

import pytest
import torch

from secvit.models import kernels
from secvit.models.kernels import cache_block, pointwise_linear, stable_argsort
from secvit.models.seca import SECA, DepthwiseConv, RotaryEmbedding2d, cluster_sizes, rotate_packed, seca_fast, seca_reference, semantic_order, unpack_qkv
from secvit.models.secvit import SecStage


def packed(n: int, heads: int = 2, d: int = 8, batch: int = 2, seed: int = 0, dtype=torch.float64):
    """A packed (B, N, 3, heads, d) q/k/v tensor."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, 3, heads, d, generator=g, dtype=dtype)


@pytest.fixture(params=["matmul", "sdpa"], ids=["cpu-matmuls", "cpu-sdpa"])
def cpu_kernel(request):
    """Both CPU attention kernels, whichever this host selects (kernels.cpu_attention)."""
    with kernels.use_cpu_attention(request.param):
        yield request.param


def reference(qkv, clusters):
    """seca_reference on the packed tensor, in the token layout seca_fast returns."""
    b, n = qkv.shape[:2]
    return seca_reference(*unpack_qkv(qkv), clusters).transpose(1, 2).reshape(b, n, -1)


def released_seca(q, k, v, clusters):
    """The released algorithm (divisible sizes only): sort, reshape into equal chunks, attend, restore."""
    order = semantic_order(k)
    idx = order.unsqueeze(-1).expand_as(q)
    qs, ks, vs = (t.gather(2, idx) for t in (q, k, v))
    b, h, n, d = q.shape
    qs, ks, vs = (t.reshape(b, h, clusters, n // clusters, d) for t in (qs, ks, vs))
    out = (torch.softmax(qs @ ks.transpose(-1, -2), -1) @ vs).reshape(b, h, n, d)
    return torch.empty_like(out).scatter_(2, idx, out)


@pytest.mark.parametrize("n,c", [(3136, 32), (784, 8), (196, 2), (64, 4)])
def test_divisible_sizes_match_released_algorithm(n, c):
    qkv = packed(n)
    b = qkv.shape[0]
    expected = released_seca(*unpack_qkv(qkv), c)
    torch.testing.assert_close(seca_reference(*unpack_qkv(qkv), c), expected)
    torch.testing.assert_close(seca_fast(qkv, c), expected.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_stable_argsort_is_torchs_stable_argsort(dtype):
    """The numpy key sort of CPU scores: ascending, ties (also -0.0 vs 0.0) in token order, infinities at the ends."""
    g = torch.Generator().manual_seed(0)
    score = torch.randn(3, 2, 301, generator=g).to(dtype)
    score[..., 10:20] = score[..., 40:41]  # a run of ties
    score[..., 50], score[..., 60], score[..., 70] = 0.0, -0.0, 0.0
    score[..., 80], score[..., 90] = float("inf"), -float("inf")
    score[..., 100:110] = -score[..., 100:110].abs()  # negatives of several magnitudes
    got = stable_argsort(score)
    assert got.dtype == torch.int64 and got.shape == score.shape
    assert torch.equal(got, score.argsort(dim=-1, stable=True))
    with torch.inference_mode():
        assert torch.equal(stable_argsort(score), got)


@pytest.mark.parametrize("n,c", [(66800, 32), (10, 4), (97, 8), (33, 32), (5, 2)])
def test_cluster_sizes_are_equitable(n, c):
    sizes = cluster_sizes(n, c)
    assert len(sizes) == c and sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)
    assert max(sizes) == math.ceil(n / c)


def test_too_few_tokens_for_clusters():
    with pytest.raises(ValueError, match="cannot fill"):
        cluster_sizes(3, 4)


@pytest.mark.parametrize(
    "n,c,heads", [(784, 8, 4), (196, 2, 8), (49, 1, 4), (97, 8, 2), (10, 4, 1), (210, 32, 2), (33, 32, 2), (49, 2, 3)]
)
def test_fast_matches_reference_forward_and_backward(n, c, heads, cpu_kernel):
    """Divisible and non-divisible token counts, global attention; gradients w.r.t. q, k and v;
    both CPU attention kernels."""
    qkv = packed(n, heads=heads).requires_grad_()
    fast, ref = seca_fast(qkv, c), reference(qkv, c)
    torch.testing.assert_close(fast, ref)
    grad = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad(fast, qkv, grad)
    (g_ref,) = torch.autograd.grad(ref, qkv, grad)
    assert g_ref.abs().amax(dim=(0, 1, 3, 4)).min() > 0  # q, k and v all receive gradient
    torch.testing.assert_close(g_fast, g_ref)
    with torch.no_grad():  # inference: another CPU kernel (chunked matmuls or SDPA)
        torch.testing.assert_close(seca_fast(qkv, c), ref)


def test_fast_matches_reference_in_float32_at_a_stage_shape(cpu_kernel):
    qkv = packed(784, heads=4, d=32, batch=4, dtype=torch.float32).requires_grad_()  # inference in 2 chunks of scores
    fast, ref = seca_fast(qkv, 8), reference(qkv, 8)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(seca_fast(qkv, 8), ref, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(fast)
    torch.testing.assert_close(torch.autograd.grad(fast, qkv, grad)[0], torch.autograd.grad(ref, qkv, grad)[0], rtol=1e-4, atol=1e-4)


def test_every_token_attends_only_within_its_cluster():
    """Perturbing a token's value changes exactly the outputs of its own cluster (non-divisible)."""
    n, c = 97, 8
    qkv = packed(n, heads=1, batch=1)
    order = semantic_order(unpack_qkv(qkv)[1])[0, 0]
    sizes = cluster_sizes(n, c)
    clusters = torch.empty(n, dtype=torch.long)
    clusters[order] = torch.repeat_interleave(torch.arange(c), torch.tensor(sizes))
    base = seca_fast(qkv, c)
    for token in (0, int(order[-1]), int(order[sizes[0]]), int(order[sizes[0] - 1])):
        changed_qkv = qkv.clone()
        changed_qkv[0, token, 2] += 10.0
        changed = (seca_fast(changed_qkv, c) - base).abs().amax(-1)[0] > 1e-9
        assert torch.equal(changed, clusters == clusters[token])


def test_global_attention_when_one_cluster():
    qkv = packed(49)
    q, k, v = unpack_qkv(qkv)
    expected = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    torch.testing.assert_close(seca_reference(q, k, v, 1), expected)
    torch.testing.assert_close(seca_fast(qkv, 1), expected.transpose(1, 2).reshape(2, 49, -1))


def test_rotary_tables_rotate_pairs_and_scale_keys():
    """rot(x): pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin); k also scaled; v unchanged.
    bf16 (rotated in fp32, rounded once) agrees."""
    rope = RotaryEmbedding2d(8).double()
    qkv = packed(12, heads=2, d=8)
    out = rotate_packed(qkv, rope.qkv_tables(3, 4, 0.5))
    sin, cos = rope(3, 4)
    x0, x1 = qkv[..., 0::2], qkv[..., 1::2]
    s, c = sin[:, None, None, 0::2], cos[:, None, None, 0::2]
    expected = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)
    torch.testing.assert_close(out[:, :, 0], expected[:, :, 0])
    torch.testing.assert_close(out[:, :, 1], expected[:, :, 1] * 0.5)
    torch.testing.assert_close(out[:, :, 2], qkv[:, :, 2], rtol=0, atol=0)
    low = rotate_packed(qkv.bfloat16(), rope.qkv_tables(3, 4, 0.5))
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.double(), out, rtol=2e-2, atol=2e-2)


def test_module_reference_and_fast_paths_agree_at_odd_sizes():
    torch.manual_seed(0)
    fast = SECA(32, 2, 8).double()
    ref = SECA(32, 2, 8, reference=True).double()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 13, 17, 32, dtype=torch.float64, requires_grad=True)
    tables = RotaryEmbedding2d(16).double().qkv_tables(13, 17, fast.scale)
    out_fast, out_ref = fast(x, tables), ref(x, tables)
    torch.testing.assert_close(out_fast, out_ref)
    grad = torch.randn_like(out_fast)
    torch.testing.assert_close(torch.autograd.grad(out_fast, x, grad)[0], torch.autograd.grad(out_ref, x, grad)[0])


def test_cluster_assignment_matches_sizes():
    torch.manual_seed(0)
    attn = SECA(32, 2, 8)
    x = torch.randn(1, 10, 11, 32)
    labels = attn.cluster_assignment(x, RotaryEmbedding2d(16).qkv_tables(10, 11, attn.scale))
    assert labels.shape == (1, 2, 10, 11)
    counts = torch.bincount(labels[0, 0].flatten(), minlength=8).tolist()
    assert counts == cluster_sizes(110, 8)


def _stage():
    torch.manual_seed(0)
    return SecStage(16, 32, depth=2, heads=2, clusters=4, drop_paths=[0.0, 0.0], layer_scale=1e-2, downsample=True).eval()


def test_stage_is_fx_traceable():
    stage = _stage()
    traced = torch.fx.symbolic_trace(stage)
    for size in ((9, 11), (16, 16)):  # non-divisible and divisible token counts
        x = torch.randn(2, 16, *size)
        torch.testing.assert_close(traced(x), stage(x))


def test_stage_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) with the eager backend: dynamo traces the whole stage."""
    stage = _stage()
    compiled = torch.compile(stage, backend="eager", fullgraph=True)
    x = torch.randn(2, 16, 9, 11, requires_grad=True)
    out = compiled(x)
    torch.testing.assert_close(out, stage(x))
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_inference_shortcuts_compute_what_the_autograd_path_computes():
    """fp32 without gradients the stage takes shortcuts (q and k rotated in place, fc1 + GELU as one
    oneDNN call, the other linear maps through oneDNN, residual depthwise convs as one conv); with gradients
    it runs the plain ops."""
    stage = _stage()
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        fast = stage(x)
    plain = stage(x.clone().requires_grad_())
    torch.testing.assert_close(fast, plain.detach())


def test_cache_blocked_stage_computes_the_whole_batch(monkeypatch):
    """CPU inference runs a stage's blocks on batch chunks that fit the cache: same results."""
    stage = _stage()
    x = torch.randn(3, 16, 9, 11)
    with torch.no_grad():
        tokens, _ = stage.tokens(x)
        assert cache_block(tokens) == 0  # small maps: the whole batch at once
        whole = stage(x)
        monkeypatch.setattr(kernels, "CACHE_BLOCK_BYTES", 1)  # the documented budget
        assert cache_block(tokens) == 1  # now one image per chunk
        chunked = stage(x)
        with kernels.enabled_as(False):
            assert cache_block(tokens) == 0  # fast paths off: never split
    assert cache_block(tokens) == 0  # with gradients: never split
    torch.testing.assert_close(chunked, whole)


def test_residual_depthwise_conv_and_fused_gelu_match_plain_ops():
    torch.manual_seed(0)
    conv = DepthwiseConv(16, 3, residual=True)
    x = torch.randn(2, 9, 11, 16)
    plain = x + torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=1, groups=16).permute(0, 2, 3, 1)
    torch.testing.assert_close(conv(x), plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a float32 input: identity added in fp32, not rounded into a bf16 weight
        low = conv(x)
    assert low.dtype == torch.float32 and (low - plain).abs().max() < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 input (the model's case): bf16 out, within bf16 rounding
        low = conv(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), plain, rtol=2**-7, atol=0.02)
    w, b = torch.randn(48, 16) * 0.2, torch.randn(48)
    with torch.no_grad():
        plain = torch.nn.functional.linear(x, w, b)
        torch.testing.assert_close(pointwise_linear(x, w, b), plain)
        torch.testing.assert_close(pointwise_linear(x, w, b, gelu=True), torch.nn.functional.gelu(plain))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 in and out, as autocast's linear and GELU
            for gelu, expected in ((False, plain), (True, torch.nn.functional.gelu(plain))):
                low = pointwise_linear(x.bfloat16(), w, b, gelu=gelu)
                assert low.dtype == torch.bfloat16
                torch.testing.assert_close(low.float(), expected, rtol=2**-6, atol=0.03)


def test_lce_conv_trains_in_float32_under_cpu_autocast():
    """The 5x5 LCE convolution under CPU bf16 autocast, with gradients, runs in float32 (oneDNN's bf16
    weight gradient for it is 3.5x slower): output in bf16, gradients exactly those of the float32
    convolution of the bf16 input; without gradients, and for 3x3 kernels, it stays in bf16."""
    torch.manual_seed(0)
    lce = DepthwiseConv(16, 5)
    v = torch.randn(2, 9, 11, 16).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lce(v)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    x = v.detach().float().permute(0, 3, 1, 2).requires_grad_()
    weight, bias = lce.weight.detach().clone().requires_grad_(), lce.bias.detach().clone().requires_grad_()
    plain = torch.nn.functional.conv2d(x, weight, bias, padding=2, groups=16)
    torch.testing.assert_close(out, plain.permute(0, 2, 3, 1).bfloat16(), rtol=0, atol=0)
    plain.bfloat16().float().square().sum().backward()
    torch.testing.assert_close(lce.weight.grad, weight.grad, rtol=0, atol=0)
    torch.testing.assert_close(v.grad, x.grad.permute(0, 2, 3, 1).bfloat16(), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        low = lce(v.detach())  # inference: oneDNN's bf16 kernel, not float32 rounded once
    assert low.dtype == torch.bfloat16 and not torch.equal(low, out.detach())
    torch.testing.assert_close(low.float(), out.detach().float(), rtol=2**-6, atol=0.05)
    lce.zero_grad(set_to_none=True)
    lce.bfloat16()  # parameters in bf16 too: the same float32 convolution, gradients in their dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lce(v.detach().requires_grad_()).float().sum().backward()
    assert lce.weight.grad.dtype == lce.bias.grad.dtype == torch.bfloat16


def test_inference_follows_every_change_of_the_weights():
    """fp32 CPU inference keeps no state derived from the weights: every way a weight changes shows
    in the next output, also those that leave the version counter alone (fused AdamW, writes
    through .data); a cache of oneDNN-reordered weights keyed on that counter failed this."""
    import copy

    from secvit.models.seca import PointwiseConv

    torch.manual_seed(0)
    layer = PointwiseConv(16, 24, gelu=True)
    x = torch.randn(2, 5, 7, 16)

    def check(module):
        with torch.no_grad():
            expected = torch.nn.functional.gelu(torch.nn.functional.linear(x, module.weight.flatten(1), module.bias))
            torch.testing.assert_close(module(x), expected)

    def fused_adamw_step(module):
        optimizer = torch.optim.AdamW(module.parameters(), lr=0.1, fused=True)
        module(x).square().sum().backward()
        optimizer.step()  # on CPU, leaves the version counter as it was (torch 2.14)

    check(layer)
    with torch.no_grad():
        layer.weight.mul_(-2.0)
    check(layer)
    fused_adamw_step(layer)
    check(layer)
    with torch.no_grad():
        layer.weight.data.add_(1.0)
    check(layer)
    layer.load_state_dict({"weight": torch.randn(24, 16, 1, 1), "bias": torch.randn(24)})
    check(layer)
    layer.weight.data = torch.randn(24, 16, 1, 1)
    check(layer)
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.add_(1.0)
    check(twin)
    check(layer)


def _ops(fn) -> set[str]:
    """Names of the operators that ``fn()`` runs (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_the_switch_turns_every_fast_path_off_with_equal_outputs_and_gradients():
    """secvit_tiny with the fast paths on and off (kernels.enabled_as; SECVIT_FAST_KERNELS in a new
    process): equal inference outputs, training outputs and gradients; switched off, none of the fast
    kernels runs (oneDNN linear; attention is SDPA), while switched on the CPU inference runs them."""
    import os
    import subprocess
    import sys

    import timm

    import copy

    torch.manual_seed(0)
    model = timm.create_model("secvit_tiny", num_classes=10, drop_path_rate=0.0).eval()
    start = copy.deepcopy(model.state_dict())  # training mode updates the BN statistics: each run starts here
    x = torch.randn(3, 3, 72, 88)  # 18x22 tokens in stage 1: clusters do not divide them

    def infer():
        model.load_state_dict(start)
        with torch.no_grad():
            return model(x)

    def train():
        model.load_state_dict(start)
        model.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_()
        out = model.train()(inputs)
        out.square().sum().backward()
        model.eval()
        return out.detach(), inputs.grad, {n: p.grad for n, p in model.named_parameters()}

    assert kernels.enabled()
    fast_out, fast_train = infer(), train()
    with kernels.use_cpu_attention("matmul"):
        fast_ops = _ops(infer)
    with kernels.enabled_as(False):
        assert not kernels.enabled()
        plain_out, plain_train = infer(), train()
        plain_ops = _ops(infer)
    assert kernels.enabled()
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_train[0], plain_train[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_train[1], plain_train[1], rtol=1e-4, atol=1e-4)
    for name, grad in fast_train[2].items():
        torch.testing.assert_close(grad, plain_train[2][name], rtol=1e-3, atol=1e-4, msg=name)
    if torch.backends.mkldnn.is_available():
        assert "mkldnn::_linear_pointwise" in fast_ops
    assert "aten::scaled_dot_product_attention" not in fast_ops  # the chunked matmuls instead
    assert "mkldnn::_linear_pointwise" not in plain_ops and "aten::scaled_dot_product_attention" in plain_ops
    probe = "from secvit.models import kernels; print(kernels.enabled())"
    env = {**os.environ, "SECVIT_FAST_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
