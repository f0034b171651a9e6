"""Top-1 / top-5 accuracy on the ImageNet validation split."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from secvit.engine.amp import autocast, recipe_dtype
from secvit.engine.distributed import DistEnv, all_reduce_sum


def predict(model: nn.Module, images: torch.Tensor, dtype: torch.dtype | str | None) -> torch.Tensor:
    """Float32 logits of ``images``: the backbone under autocast to ``dtype`` (None: float32), the head
    (pooling and classifier) in float32 on the features, so that near-tied logits are not rounded to
    bf16 (8 significant bits) before top-k picks among them."""
    with autocast(images.device, dtype):
        features = model.forward_features(images)
    return model.forward_head(features.float())


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, env: DistEnv, amp_dtype: str | None = None) -> dict[str, float]:
    """Accuracy in percent over the whole split (summed across ranks); ``images`` counts those evaluated."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=env.device)  # top1, top5, total
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable (skipped, not replaced)
            continue
        images, targets = batch
        images, targets = images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True)
        logits = predict(model, images, recipe_dtype(amp_dtype, env.device))
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = topk == targets[:, None]
        counts += torch.tensor([hits[:, 0].sum(), hits.any(dim=1).sum(), len(targets)], device=env.device)
    top1, top5, total = all_reduce_sum(counts).tolist()
    return {"top1": 100 * top1 / max(total, 1), "top5": 100 * top5 / max(total, 1), "images": int(total)}
