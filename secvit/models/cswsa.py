"""Cross-shaped window self-attention (CSWSA): table 6's "SECA→CSWSA" ablation.

Written from the idea of CSWin Transformer (Dong et al., CVPR 2022): the heads split in
two halves; the first half attends within horizontal stripes (``stripe`` whole rows of
the map), the second within vertical stripes (``stripe`` whole columns), so the two
halves together give every token a cross-shaped field. With an odd number of heads the
horizontal half takes the extra head (a single head attends within horizontal stripes only).

Everything around the token grouping is SECA's, so the ablation changes only which
tokens attend to which: the same q/k/v projection with 2-D rotary embedding and scaled
k, the 5x5 depthwise LCE on v (in place of CSWin's LePE, which plays the same role), and
the output projection. Parameters are SECA's exactly, and FLOPs without the attention
matmuls too (SECA's cluster ordering aside).

Stripe widths per stage are CSWin-T's, 1, 2, 7, 7 (:data:`STRIPES`): at 224x224 the
stages are 56, 28, 14 and 7 tokens wide, so the last stage's stripe is the whole map
(global attention, as in SecViT's last stage). Any input size works: a side that the
stripe does not divide is zero-padded to the next multiple, the padded tokens are masked
out as keys and dropped as queries.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor

from secvit.models.kernels import attend
from secvit.models.seca import RotaryAttention

__all__ = ["CSWSA", "STRIPES", "cross_shaped_attention"]

#: Stripe width of each stage (CSWin-T's).
STRIPES: tuple[int, int, int, int] = (1, 2, 7, 7)


def _row_stripes(qkv: Tensor, stripe: int) -> Tensor:
    """Attention within horizontal stripes of ``stripe`` rows.

    ``qkv``: (B, H, W, 3, heads, d), k already scaled. Returns (B, H, W, heads*d).
    """
    bsz, height, width, _, heads, dim = qkv.shape
    padded = -(-height // stripe) * stripe
    if padded != height:
        qkv = F.pad(qkv, (0, 0, 0, 0, 0, 0, 0, 0, 0, padded - height))
    count = padded // stripe
    length = stripe * width
    # (B, nS, s, W, 3, heads, d) -> (3, B, heads, nS, s, W, d) -> (3, B, heads*nS, s*W, d)
    grouped = qkv.reshape(bsz, count, stripe, width, 3, heads, dim).permute(4, 0, 5, 1, 2, 3, 6)
    q, k, v = grouped.reshape(3, bsz, heads * count, length, dim).unbind(0)
    mask = None
    if padded != height:
        rows = torch.arange(padded, device=qkv.device).view(count, 1, stripe, 1) < height
        mask = rows.expand(count, 1, stripe, width).reshape(count, 1, length).repeat(heads, 1, 1)
    out = attend(q, k, v, mask)  # (B, heads*nS, s*W, d)
    out = out.view(bsz, heads, count, stripe, width, dim).permute(0, 2, 3, 4, 1, 5)
    return out.reshape(bsz, padded, width, heads * dim)[:, :height]


def cross_shaped_attention(qkv: Tensor, stripe: int) -> Tensor:
    """CSWSA on a packed projection ``qkv`` (B, H, W, 3, heads, d), k already scaled.

    The first ``ceil(heads / 2)`` heads attend within horizontal stripes, the others within
    vertical stripes, each ``stripe`` tokens wide. Returns (B, H, W, heads*d), heads in order.
    """
    heads = qkv.shape[4]
    split = (heads + 1) // 2
    rows = _row_stripes(qkv[..., :split, :], stripe)
    if split == heads:
        return rows
    cols = _row_stripes(qkv[..., split:, :].transpose(1, 2), stripe).transpose(1, 2)
    return torch.cat([rows, cols], dim=-1)


torch.fx.wrap("cross_shaped_attention")


class CSWSA(RotaryAttention):
    """Cross-shaped window self-attention in SECA's frame (:class:`~secvit.models.seca.RotaryAttention`):
    same parameters and calling convention as SECA, so it drops into a SecViT block in its place."""

    def __init__(self, dim: int, num_heads: int, stripe: int, lce: bool = True) -> None:
        if stripe < 1:
            raise ValueError(f"stripe width must be positive, got {stripe}")
        super().__init__(dim, num_heads, lce)
        self.stripe = stripe

    def mix_tokens(self, packed: Tensor, height: int, width: int) -> Tensor:
        grid = packed.reshape(packed.shape[0], height, width, 3, self.num_heads, self.head_dim)
        return cross_shaped_attention(grid, self.stripe)

    def cluster_assignment(self, x: Tensor, tables: Tensor) -> Tensor:
        """Stripe index of every token, per head: (B, heads, H, W) (rows for the horizontal heads)."""
        bsz, height, width, _ = x.shape
        split = (self.num_heads + 1) // 2
        rows = (torch.arange(height, device=x.device) // self.stripe).view(height, 1).expand(height, width)
        cols = (torch.arange(width, device=x.device) // self.stripe).view(1, width).expand(height, width)
        labels = torch.stack([rows] * split + [cols] * (self.num_heads - split))
        return labels.unsqueeze(0).expand(bsz, -1, -1, -1)
