"""Stage: top-1/top-5 of a checkpoint (ours or released), raw and EMA weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.pretrain import results_dir, run_dir
from pipelines.settings import data_config, load
from secvit.engine.config import PretrainConfig


def evaluate_stage(
    profile: str, model: str, params: Path, checkpoint: Path | None = None, data: Path | None = None, out: Path | None = None
) -> dict[str, Any]:
    from secvit.checkpoint import load_file_checked, pick_state_dict
    from secvit.data.layout import check_imagenet
    from secvit.engine.distributed import init_distributed
    from secvit.engine.evaluate import evaluate
    from secvit.engine.loaders import build_eval_loader
    from secvit.atomic import write_json
    from secvit.models.registry import create
    from secvit.models.secvit import checkpoint_filter_fn

    cfg = load(params, profile, "pretrain", PretrainConfig)
    data_cfg = data_config(params, profile)
    root = data or data_cfg.root("imagenet")
    counts = check_imagenet(root, expected=None if data else data_cfg.expected_for("imagenet"))
    stage = checkpoint is None and data is None  # the evaluate stage: the run's own checkpoint and data
    checkpoint = checkpoint or run_dir(profile, model) / "last.pth"
    state = load_file_checked(checkpoint, full=True)
    env = init_distributed()
    loader = build_eval_loader(Path(root), cfg.img_size, cfg.eval_crop_pct, cfg.interpolation, cfg.batch_per_device, cfg.workers, env)
    net = create(model, num_classes=counts.classes).to(env.device)
    result: dict[str, Any] = {"model": model, "checkpoint": str(checkpoint), "img_size": cfg.img_size}
    for weights, ema in (("raw", False), ("ema", True)):
        if ema and state.get("model_ema") is None:
            continue
        net.load_state_dict(checkpoint_filter_fn(pick_state_dict(state, ema, str(checkpoint)), net))
        metrics = evaluate(net, loader, env, cfg.amp_dtype)
        suffix = "" if weights == "raw" else "_ema"
        result.update({f"top1{suffix}": metrics["top1"], f"top5{suffix}": metrics["top5"], "images": metrics["images"]})
    out = out or (results_dir(profile, model) / "eval.json" if stage else None)
    if out is not None and env.is_main:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result
