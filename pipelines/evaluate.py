"""Stage: top-1/top-5 of a checkpoint (ours or released) on the ImageNet validation split.

By default the run's ``best.pth``: the weights behind the number the paper reports (best
epoch, the better of raw and EMA weights), so ``eval.json`` re-measures ``best_top1`` of
``metrics.json`` from the file that the figures and downstream stages use. Any other
checkpoint (``--checkpoint``: ``last.pth``, a released file) is evaluated with its ``model``
weights and, when it has them, its ``model_ema`` weights.

``--checkpoint released:<model>`` is the profile's released checkpoint (params.yaml ``released.checkpoints``,
hash-checked: :func:`secvit.released.released_file`); as a stage (``evaluate-released@<profile>-<model>``)
its metrics go to ``results/<profile>/released/pretrain/<model>/metrics.json`` with ``best_top1``, the better
of raw and EMA as the paper reports, and the file's identity to ``checkpoint.json`` beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secvit.atomic import write_json
from secvit.checkpoint import load_file_checked, pick_state_dict
from secvit.data.layout import check_imagenet
from secvit.device import require_device
from secvit.engine.config import pretrain_config
from secvit.engine.distributed import init_distributed
from secvit.engine.evaluate import evaluate
from secvit.engine.loaders import build_eval_loader
from secvit.errors import SecvitError
from secvit.models.registry import check_model, create
from secvit.models.secvit import checkpoint_filter_fn
from secvit.data.inputs import stage_data
from secvit.provenance import code_version
from secvit.released import released_file, released_model
from secvit.runs import BEST, EVAL, METRICS, PRETRAIN, RELEASED, lane_task, results_dir, run_dir

#: Beside a released checkpoint's metrics: which file they measure (what the dense runs from it depend on).
IDENTITY = "checkpoint.json"


def evaluate_stage(
    profile: str, model: str, params: Path, checkpoint: Path | str | None = None, data: Path | None = None, out: Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (default: the run's best.pth) and return the metrics.

    ``top1``/``top5`` are of the checkpoint's ``model`` weights (for best.pth, the raw or EMA
    weights named by ``weights``); ``top1_ema``/``top5_ema`` of its ``model_ema`` weights if any.
    In stage mode (no ``--checkpoint`` or ``--data``) the metrics also go to the run's eval.json.
    """
    require_device("evaluate", profile, params, device)
    check_model(model)
    cfg = pretrain_config(params, profile, None)
    stage = checkpoint is None and data is None  # the evaluate stage: the run's own checkpoint and data
    named = released_model(None if checkpoint is None else str(checkpoint))
    identity: dict[str, Any] = {}
    if named is not None:
        if named != model:
            raise SecvitError(f"--checkpoint {checkpoint} is a {named} checkpoint; evaluate it with --model {named}")
        checkpoint, sha = released_file(params, profile, model)
        identity = {"model": model, "file": str(checkpoint), "sha256": sha, "bytes": checkpoint.stat().st_size}
        released = data is None  # the evaluate-released stage
    if checkpoint is None:
        checkpoint = run_dir(profile, model) / BEST
        if not checkpoint.is_file():
            raise SecvitError(f"{checkpoint} does not exist; train the run first (secvit pretrain --profile {profile} --model {model})")
    state = load_file_checked(checkpoint)
    if data is None:  # the profile's dataset, checked and verified by the data stage
        imagenet = stage_data(profile, params, "imagenet")
        root, counts, bad = imagenet.root, imagenet.counts, imagenet.bad
    else:
        root, counts, bad = data, check_imagenet(data), {}
    env = init_distributed()
    loader = build_eval_loader(Path(root), cfg.img_size, cfg.eval_crop_pct, cfg.interpolation, cfg.batch_per_device, cfg.workers, env, exclude=bad)
    net = create(model, num_classes=counts.classes).to(env.device)
    result: dict[str, Any] = {"model": model, "checkpoint": str(checkpoint), "img_size": cfg.img_size, **identity}
    if isinstance(state.get("weights"), str):  # our best.pth: which weights of which epoch
        result.update(weights=state["weights"], epoch=state.get("epoch"))
    for ema in (False, True):
        if ema and state.get("model_ema") is None:
            continue
        net.load_state_dict(checkpoint_filter_fn(pick_state_dict(state, ema, str(checkpoint)), net))
        metrics = evaluate(net, loader, env, cfg.amp_dtype)
        suffix = "_ema" if ema else ""
        result.update({f"top1{suffix}": metrics["top1"], f"top5{suffix}": metrics["top5"], "images": metrics["images"]})
    # each image counts once: one left out (bad) or skipped (unreadable) lowers the count, nothing stands in for it
    result["skipped_images"] = counts.splits["val"] - result["images"]
    result["code"] = code_version()
    if named is not None:  # the paper's convention: the better of raw and EMA weights
        best = max(("model", "model_ema"), key=lambda w: result.get("top1" if w == "model" else "top1_ema", -1.0))
        result.update(best_top1=result["top1" if best == "model" else "top1_ema"], best_weights=best)
        if released and env.is_main:
            folder = results_dir(profile, model, lane_task(PRETRAIN, RELEASED))
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / IDENTITY, identity)
            write_json(folder / METRICS, result)
    out = out or (results_dir(profile, model) / EVAL if stage else None)
    if out is not None and env.is_main:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result
