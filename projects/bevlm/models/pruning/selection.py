"""Shared token-selection rules of the pruning methods: how many tokens, which ones, gathering."""
from __future__ import annotations

import torch
from torch import Tensor


def num_kept(num_tokens: int, keep_ratio: float) -> int:
    """Number of tokens kept: ``round(keep_ratio * num_tokens)`` clamped to ``[1, num_tokens]``.

    Args:
        num_tokens: tokens before pruning (>= 1).
        keep_ratio: fraction kept, in (0, 1].

    Returns:
        the kept count (Python ``round``: halves go to the even integer).
    """
    if num_tokens < 1:
        raise ValueError(f"pruning: there are no tokens to prune (num_tokens={num_tokens})")
    if not 0.0 < float(keep_ratio) <= 1.0:
        raise ValueError(f"pruning: keep_ratio={keep_ratio} must be in (0, 1]; 1.0 disables pruning")
    return min(num_tokens, max(1, round(float(keep_ratio) * num_tokens)))


def top_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores per row, returned in ascending (token) order.

    Ties go to the lower index (stable sort), so the choice is deterministic.

    Args:
        scores: ``[B, N]``.
        k: tokens kept per row, ``1 <= k <= N``.

    Returns:
        ``[B, k]`` int64 indices, sorted ascending in each row.
    """
    if scores.dim() != 2 or not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top_indices: need scores [B, N] and 1 <= k <= N, got {tuple(scores.shape)} and k={k}")
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [B, N]
    return order[:, :k].sort(dim=1).values  # [B, k]


def select_tokens(vis: Tensor, keep_idx: Tensor) -> Tensor:
    """Gather the kept tokens of every sample, in the order of ``keep_idx``.

    Args:
        vis: ``[B, N, D]`` visual tokens.
        keep_idx: ``[B, n]`` int64 indices into N.

    Returns:
        ``[B, n, D]``.
    """
    if vis.dim() != 3 or keep_idx.dim() != 2 or keep_idx.shape[0] != vis.shape[0]:
        raise ValueError(f"select_tokens: need vis [B, N, D] and keep_idx [B, n], got {tuple(vis.shape)} and "
                         f"{tuple(keep_idx.shape)}")
    index = keep_idx.to(vis.device, torch.long)[..., None].expand(-1, -1, vis.shape[2])  # [B, n, D]
    return vis.gather(1, index)
