"""BEV-side visual-token pruning: keep the projector tokens over occupied ground.

The auxiliary BEV head predicts, per BEV cell, the probability that an object footprint covers
it (:meth:`bevlm.models.heads.BEVAuxHead.occupancy_score`). Pooling that map onto the
projector's token grid (the same adaptive average pooling as
:class:`bevlm.models.projectors.PoolMLPProjector`) gives one saliency score per visual token;
the top ``keep_ratio`` tokens are kept, in their original (row-major) order, before the LLM
ever sees them. The cost saved is the whole LLM prefill of the dropped tokens (and their KV
reads at every decoding step); the scoring costs one small conv head on the BEV map, which
needs no LLM pass (unlike FastV, :mod:`.fastv`).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .selection import num_kept, top_indices


def pool_token_scores(occupancy: Tensor, bev_hw: tuple[int, int], token_hw: tuple[int, int]) -> Tensor:
    """Average a per-cell BEV score over each projector token's cells.

    Args:
        occupancy: ``[B, Hb*Wb]`` scores of the row-major BEV grid.
        bev_hw: ``(Hb, Wb)``.
        token_hw: ``(out_h, out_w)`` grid of the projector's output tokens.

    Returns:
        ``[B, out_h*out_w]`` row-major token scores.
    """
    b, length = occupancy.shape
    hb, wb = bev_hw
    if length != hb * wb:
        raise ValueError(f"pool_token_scores: occupancy has {length} cells but bev_hw={bev_hw}; pass the "
                         "aux head's (bev_h, bev_w)")
    grid = occupancy.reshape(b, 1, hb, wb)  # [B, 1, Hb, Wb]
    return F.adaptive_avg_pool2d(grid, tuple(token_hw)).flatten(1)  # [B, oh*ow]


def bev_token_keep(occupancy: Tensor, bev_hw: tuple[int, int], token_hw: tuple[int, int],
                   keep_ratio: float) -> Tensor:
    """Indices of the visual tokens to keep, ranked by pooled occupancy.

    Args:
        occupancy: ``[B, Hb*Wb]`` occupancy probabilities (or any per-cell saliency).
        bev_hw: ``(Hb, Wb)`` of the BEV grid.
        token_hw: ``(out_h, out_w)`` of the projector's token grid.
        keep_ratio: fraction kept, in (0, 1]; ``round(keep_ratio * N)`` tokens, at least 1.

    Returns:
        ``[B, n_keep]`` int64 token indices, ascending (token order preserved); ``keep_ratio=1``
        returns every index.
    """
    scores = pool_token_scores(occupancy, bev_hw, token_hw)  # [B, N]
    return top_indices(scores, num_kept(scores.shape[1], keep_ratio))


def projector_grid(projector: nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((bev_h, bev_w), (out_h, out_w))`` of a grid-pooling projector.

    Raises:
        ValueError: the projector has no token grid (e.g. ``ResamplerProjector``).
    """
    names = ("bev_h", "bev_w", "out_h", "out_w")
    if not all(hasattr(projector, n) for n in names):
        raise ValueError(f"BEV-side pruning needs a grid projector with {names} (PoolMLPProjector); "
                         f"{type(projector).__name__} has no token grid. Set bev_keep_ratio=1.0 or use FastV.")
    return (projector.bev_h, projector.bev_w), (projector.out_h, projector.out_w)


def bev_keep_for_model(aux_head: nn.Module, projector: nn.Module, bev: Tensor, keep_ratio: float) -> Tensor:
    """Token keep indices of a BEVVLM from its aux head's occupancy and its projector's grid.

    Args:
        aux_head: :class:`bevlm.models.heads.BEVAuxHead` (``occupancy_score``).
        projector: :class:`bevlm.models.projectors.PoolMLPProjector`.
        bev: ``[B, Hb*Wb, C]`` BEV tokens.
        keep_ratio: fraction of visual tokens kept, in (0, 1].

    Returns:
        ``[B, n_keep]`` ascending token indices into the projector's output.
    """
    if aux_head is None:
        raise ValueError("BEV-side pruning needs the model's aux_head (occupancy score); configure "
                         "model.aux_head or set bev_keep_ratio=1.0")
    bev_hw, token_hw = projector_grid(projector)
    return bev_token_keep(aux_head.occupancy_score(bev), bev_hw, token_hw, keep_ratio)
