"""Speed options of training and the benchmark library: same results as the plain path.

(No timings are asserted; `secvit bench` prints them.)"""

import copy
import dataclasses
import json
import mmap
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import one_line_error, secvit_in_process
from secvit.bench import environment, peak_memory
from secvit.bench.models import models_markdown
from secvit.bench.seca import appendix_e_seca, bench_seca, seca_shapes
from secvit.doctor.gpu_check import FAMILY_MODELS
from secvit.timing import time_interleaved
from secvit.engine.config import PretrainConfig
from secvit.engine.train import apply_speed_options, build_optimizer
from secvit.models import create
from secvit.models.seca import seca_fast
from secvit.models.secvit import SecStage
from secvit.params import load_params


@pytest.fixture(scope="module")
def cfg(repo_root) -> PretrainConfig:
    from secvit.engine.config import pretrain_config

    return pretrain_config(repo_root / "params.yaml", "smoke", "secvit_tiny")


def _tiny(seed=0):
    torch.manual_seed(seed)
    return create("secvit_tiny", num_classes=4, drop_path_rate=0.0).double()


def _grads(model, x, targets):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), targets).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_speed_options_are_in_the_paper_recipe(repo_root):
    from secvit.engine.config import pretrain_config

    paper = pretrain_config(repo_root / "params.yaml", "paper", "secvit_tiny")
    assert paper.fused_optimizer and paper.channels_last and not paper.compile and not paper.grad_checkpointing
    assert set(load_params(repo_root / "params.yaml")["paper"]["pretrain_speed"]) >= {"fused_optimizer", "channels_last", "compile", "grad_checkpointing"}


def test_channels_last_and_grad_checkpointing_keep_outputs_and_gradients(cfg):
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    targets = torch.tensor([1, 3])
    plain = apply_speed_options(_tiny().train(), dataclasses.replace(cfg, channels_last=False, grad_checkpointing=False), torch.device("cpu"))
    fast = apply_speed_options(_tiny().train(), dataclasses.replace(cfg, channels_last=True, grad_checkpointing=True), torch.device("cpu"))
    assert fast.stem[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(stage.grad_checkpointing for stage in fast.stages)
    g_plain = _grads(plain, x, targets)
    g_fast = _grads(fast, x.contiguous(memory_format=torch.channels_last), targets)
    assert g_plain.keys() == g_fast.keys()
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], msg=name)


def test_fused_adamw_makes_the_same_updates(cfg):
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    targets = torch.tensor([0, 2])
    models, opts = [], []
    for fused in (False, True):
        model = _tiny().train()
        opt = build_optimizer(model, dataclasses.replace(cfg, fused_optimizer=fused))
        assert bool(opt.defaults.get("fused")) == fused
        models.append(model)
        opts.append(opt)
    for _ in range(2):
        for model, opt in zip(models, opts):
            _grads(model, x, targets)
            opt.step()
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        torch.testing.assert_close(b, a, msg=name)
    assert not torch.equal(models[0].stem[0][0].weight, _tiny().stem[0][0].weight)  # it did train


def test_bf16_autocast_runs_attention_in_bf16():
    """Under CPU autocast the SECA path stays in bf16 (no silent fp32 fallback) and agrees with fp32
    (few clusters, so bf16 rounding rarely moves a token to another cluster)."""
    torch.manual_seed(0)
    stage = SecStage(16, 64, 2, 2, 4, [0.0, 0.0], None, True).eval()
    x = torch.randn(1, 16, 32, 32)
    seen = []
    hook = stage.blocks[0].attn.proj.register_forward_hook(lambda m, i, o: seen.append(i[0].dtype))
    with torch.no_grad():
        ref = stage(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = stage(x)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert F.cosine_similarity(low.float().flatten(), ref.flatten(), dim=0) > 0.999


def test_appendix_e_transcription_matches_fast_path():
    shape = seca_shapes("secvit_small", 64)[1]  # 8x8 tokens, 8 clusters
    g = torch.Generator().manual_seed(0)
    packed = torch.randn(2, shape.tokens, 3, shape.heads, shape.head_dim, generator=g, dtype=torch.float64)
    unscaled = packed.clone()
    unscaled[:, :, 1] /= shape.head_dim**-0.5
    nchw = unscaled.permute(0, 2, 3, 4, 1).reshape(2, -1, shape.height, shape.width)
    ours = seca_fast(packed, shape.clusters)
    theirs = appendix_e_seca(nchw, shape.heads, shape.clusters).flatten(2).transpose(1, 2)
    torch.testing.assert_close(ours, theirs)


def test_bench_seca_reports_every_stage_and_agreement():
    result = bench_seca(batch=1, rounds=1, img_size=64)
    assert [row["stage"] for row in result["shapes"]] == [1, 2, 3, 4]
    for row in result["shapes"]:
        assert max(row["max_abs_diff"].values()) < 1e-4
        assert row["max_abs_grad_diff_fast_vs_reference"] < 1e-4
        assert set(row["forward"]["ms"]) == {"appendix_e", "reference", "fast"}
    assert set(result["geomean_speedup_vs_appendix_e"]) == {"forward", "forward_backward"}


def test_timing_runs_candidates_interleaved_and_peak_memory_counts_allocations():
    calls = []
    samples = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert all(len(s) == 3 for s in samples.values())
    big = peak_memory(lambda: torch.ones(4 * 2**20).sum(), "cpu")
    assert 16 * 2**20 <= big < 32 * 2**20


def _touch_fresh_pages(pages: int) -> None:
    """Map ``pages`` pages fresh from the OS (no huge pages) and write one byte to each."""
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as memory:
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
            memory[offset] = 1


def test_timing_counts_page_faults_per_call():
    faults = {}
    time_interleaved({"fresh": lambda: _touch_fresh_pages(2048), "idle": lambda: None}, rounds=3, inner=2, page_faults=faults)
    assert len(faults["fresh"]) == len(faults["idle"]) == 3
    assert 2048 <= min(faults["fresh"]) and max(faults["fresh"]) < 3072  # per call, not per round of two calls
    assert max(faults["idle"]) < 64


def _options(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Positional arguments, and the sorted (option, value) pairs of a command line."""
    first = next(i for i, a in enumerate(args) if a.startswith("--"))
    return args[:first], sorted(zip(args[first::2], args[first + 1 :: 2]))


def test_bench_models_command_reports_and_names_a_reproducible_command(tmp_path, monkeypatch):
    """`secvit bench models --json`: throughput, peak memory and page faults per model, mode and dtype,
    ratios to the baseline, and a command that runs the same benchmark again."""
    args = ["secvit_tiny", "resnet18", "--device", "cpu", "--batch", "2", "--img-size", "64", "--rounds", "2", "--dtype", "fp32",
            "--mode", "inference", "--mode", "training", "--baseline", "resnet18", "--threads", "1"]
    run = secvit_in_process(tmp_path, "bench", "models", *args, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    keys = {"inference_fp32", "training_fp32"}
    assert set(result["models"]) == {"secvit_tiny", "resnet18"}
    for name, figures in result["models"].items():
        assert figures["params"] == sum(p.numel() for p in create(name).parameters())
        assert set(figures) - {"params"} == keys
        for key in keys:
            f = figures[key]
            assert f["img_per_s"] > 0 and f["peak_memory_mb"] > 0 and f["page_faults_per_call"] >= 0
            assert f["ms_per_batch"] == pytest.approx(1000 * 2 / f["img_per_s"])
            assert result["ratio_vs_baseline"][name][key] == pytest.approx(f["img_per_s"] / result["models"]["resnet18"][key]["img_per_s"])
    assert result["ratio_vs_baseline"]["resnet18"] == {key: 1.0 for key in keys}
    assert result["environment"]["device"] == "cpu" and result["environment"]["threads"] == 1
    assert result["environment"]["cpu_env"] == {}

    named = shlex.split(result["command"])  # the same benchmark, option for option
    assert named[:3] == ["secvit", "bench", "models"] and _options(named[3:]) == _options(args)
    markdown = models_markdown(result)
    assert f"command: `{result['command']}`" in markdown
    assert markdown.count("| secvit_tiny |") == 2  # throughput table and page-fault table

    # glibc malloc settings and instruction-set caps change CPU figures: the environment records
    # them, the command names them
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4000000000")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # not one of them
    result["environment"] = environment("cpu")
    assert result["environment"]["cpu_env"] == {"MALLOC_TRIM_THRESHOLD_": "4000000000", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert f"command: `MALLOC_TRIM_THRESHOLD_=4000000000 ONEDNN_MAX_CPU_ISA=AVX2 {result['command']}`" in models_markdown(result)


def _env_line_of(env):
    """The first line of the markdown of a one-model `bench models` result taken in ``env``."""
    figures = {"m": {"params": 1, "inference_fp32": {"img_per_s": 1.0, "peak_memory_mb": 1.0}}}
    result = {"environment": env, "command": "secvit bench models m", "models": figures, "ratio_vs_baseline": {}, "baseline": "m", "batch": 1, "img_size": 8, "rounds": 1}
    return models_markdown(result).splitlines()[0]


def test_environment_names_the_cpu_features_that_set_its_speed():
    """Hosts of one CPU model name differ in matrix units and cache (this project's machines: L3 of
    tens to hundreds of MB, with and without AMX): the environment records what /proc/cpuinfo and
    sysfs say, and the markdown shows it."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = next(line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags"))
    env = environment("cpu")
    assert env["cpu_isa"] == [flag for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16") if flag in flags]
    l3 = [d for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*") if (d / "level").read_text().strip() == "3"]
    assert env["caches"]["L3"] == (l3[0] / "size").read_text().strip() and env["caches"]["L3"].endswith("K")
    line = _env_line_of(env)
    assert f"L3 {env['caches']['L3']}" in line and (" ".join(env["cpu_isa"]) in line)


def test_environment_names_the_kernels_torch_dispatches_to():
    """ATEN_CPU_CAPABILITY runs an AVX2 host's ATen kernels on an AVX-512 one (and SECA picks its CPU
    attention kernel by them): the environment says which kernels ran, not only what the CPU has."""
    probe = "import json; from secvit.bench import environment; print(json.dumps(environment('cpu')))"
    native = environment("cpu")
    assert native["aten_kernels"] == torch.backends.cpu.get_cpu_capability() and "ATEN_CPU_CAPABILITY" not in native["cpu_env"]
    capped = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                       env={**os.environ, "ATEN_CPU_CAPABILITY": "default"}).stdout)
    assert capped["aten_kernels"] == "DEFAULT" and capped["cpu_env"] == {"ATEN_CPU_CAPABILITY": "default"}
    assert capped["cpu_isa"] == native["cpu_isa"]  # the CPU has not changed
    line = _env_line_of(capped)
    assert "ATen DEFAULT kernels" in line and "command: `ATEN_CPU_CAPABILITY=default secvit bench models m`" in line


def test_bench_models_bad_input_is_a_one_line_error(tmp_path):
    message = one_line_error(secvit_in_process(tmp_path, "bench", "models", "secvit_tinyy", "--rounds", "1"))
    assert "secvit_tinyy" in message
    message = one_line_error(secvit_in_process(tmp_path, "bench", "models", "secvit_tiny", "--dtype", "fp16", "--rounds", "1"))
    assert "fp16" in message and "bf16" in message


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_family_compiles_as_one_graph(name):
    """torch.compile(fullgraph=True) of each family's smallest model, training (drop path) forward and backward, and
    evaluation: no graph break, and the gradients and outputs of eager's.

    With one block per stage (every block type and stage, a fraction of the tracing) and the aot_eager backend:
    graph breaks are Dynamo's, found before any backend runs, and AOTAutograd traces the backward as inductor
    would; inductor's code generation on a CPU costs minutes per model (docs/benchmarks.md), so its kernels are
    left to the GPU check (scripts/gpu_check.sh compiles every family with inductor) and `secvit bench compile`."""
    # Dynamo's caches hold every earlier compile of this process: a model of another family recompiles the shared
    # code objects, and past the recompile limit fullgraph fails (or, before it, turns the shapes symbolic and
    # traces for minutes). Each family starts afresh, at static shapes, as a training run compiles one model.
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create(name, num_classes=10, drop_path_rate=0.1, depths=(1, 1, 1, 1)).train()
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True, dynamic=False)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    model(x).square().mean().backward()
    torch.manual_seed(1)  # the same drop-path draws
    compiled(x).square().mean().backward()
    for (key, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=key)
    model.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
