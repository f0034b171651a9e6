"""Stage: top-1/top-5 of a checkpoint (ours or released) on the ImageNet validation split.

By default the run's ``best.pth``: the weights behind the number the paper reports (best
epoch, the better of raw and EMA weights), so ``eval.json`` re-measures ``best_top1`` of
``metrics.json`` from the file that the figures and downstream stages use. Any other
checkpoint (``--checkpoint``: ``last.pth``, a released file) is evaluated with its ``model``
weights and, when it has them, its ``model_ema`` weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secvit.pipelines.settings import data_config
from secvit.engine.config import pretrain_config
from secvit.errors import SecvitError
from secvit.runs import BEST, EVAL, results_dir, run_dir


def evaluate_stage(
    profile: str, model: str, params: Path, checkpoint: Path | None = None, data: Path | None = None, out: Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (default: the run's best.pth) and return the metrics.

    ``top1``/``top5`` are of the checkpoint's ``model`` weights (for best.pth, the raw or EMA
    weights named by ``weights``); ``top1_ema``/``top5_ema`` of its ``model_ema`` weights if any.
    In stage mode (no ``--checkpoint`` or ``--data``) the metrics also go to the run's eval.json.
    """
    from secvit.atomic import write_json
    from secvit.checkpoint import load_file_checked, pick_state_dict
    from secvit.data.layout import check_imagenet
    from secvit.engine.distributed import init_distributed
    from secvit.engine.evaluate import evaluate
    from secvit.engine.loaders import build_eval_loader
    from secvit.gpu import require_device
    from secvit.models.registry import check_model, create
    from secvit.models.secvit import checkpoint_filter_fn

    require_device("evaluate", profile, params, device)
    check_model(model)
    cfg = pretrain_config(params, profile, None)
    data_cfg = data_config(params, profile)
    stage = checkpoint is None and data is None  # the evaluate stage: the run's own checkpoint and data
    if checkpoint is None:
        checkpoint = run_dir(profile, model) / BEST
        if not checkpoint.is_file():
            raise SecvitError(f"{checkpoint} does not exist; train the run first (secvit pretrain --profile {profile} --model {model})")
    state = load_file_checked(checkpoint)
    root = data or data_cfg.root("imagenet")
    counts = check_imagenet(root, expected=None if data else data_cfg.expected_for("imagenet"))
    env = init_distributed()
    loader = build_eval_loader(Path(root), cfg.img_size, cfg.eval_crop_pct, cfg.interpolation, cfg.batch_per_device, cfg.workers, env)
    net = create(model, num_classes=counts.classes).to(env.device)
    result: dict[str, Any] = {"model": model, "checkpoint": str(checkpoint), "img_size": cfg.img_size}
    if isinstance(state.get("weights"), str):  # our best.pth: which weights of which epoch
        result.update(weights=state["weights"], epoch=state.get("epoch"))
    for ema in (False, True):
        if ema and state.get("model_ema") is None:
            continue
        net.load_state_dict(checkpoint_filter_fn(pick_state_dict(state, ema, str(checkpoint)), net))
        metrics = evaluate(net, loader, env, cfg.amp_dtype)
        suffix = "_ema" if ema else ""
        result.update({f"top1{suffix}": metrics["top1"], f"top5{suffix}": metrics["top5"], "images": metrics["images"]})
    out = out or (results_dir(profile, model) / EVAL if stage else None)
    if out is not None and env.is_main:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result
