"""Top-1 / top-5 accuracy on the ImageNet validation split."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from secvit.engine.amp import autocast, recipe_dtype
from secvit.engine.distributed import DistEnv, all_reduce_sum


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, env: DistEnv, amp_dtype: str | None = None) -> dict[str, float]:
    """Accuracy in percent over the whole split (summed across ranks)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=env.device)  # top1, top5, total
    for images, targets in loader:
        images, targets = images.to(env.device, non_blocking=True), targets.to(env.device, non_blocking=True)
        with autocast(env.device, recipe_dtype(amp_dtype, env.device)):
            logits = model(images)
        topk = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits = topk == targets[:, None]
        counts += torch.tensor([hits[:, 0].sum(), hits.any(dim=1).sum(), len(targets)], device=env.device)
    top1, top5, total = all_reduce_sum(counts).tolist()
    return {"top1": 100 * top1 / max(total, 1), "top5": 100 * top5 / max(total, 1), "images": int(total)}
