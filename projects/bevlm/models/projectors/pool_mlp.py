"""Pool + MLP projector: BEV map -> a few LLM visual tokens.

Adaptive average pooling of the BEV map to ``out_h x out_w`` cells followed
by the two-layer MLP connector of LLaVA-1.5 (Liu et al., "Improved Baselines
with Visual Instruction Tuning", 2023).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.registry import MODELS


@MODELS.register_module()
class PoolMLPProjector(nn.Module):
    """``[B, bev_h * bev_w, C]`` -> ``[B, out_h * out_w, D]``.

    Args:
        in_dims: BEV channels C.
        out_dims: LLM hidden size D.
        bev_h, bev_w: BEV grid (tokens are row-major, see
            :mod:`bevlm.models.bev.grid`).
        out_h, out_w: pooled grid; output tokens are row-major over it.
    """

    def __init__(self, in_dims: int, out_dims: int, bev_h: int, bev_w: int,
                 out_h: int = 4, out_w: int = 4) -> None:
        super().__init__()
        self.in_dims, self.out_dims = in_dims, out_dims
        self.bev_h, self.bev_w, self.out_h, self.out_w = bev_h, bev_w, out_h, out_w
        self.mlp = nn.Sequential(nn.Linear(in_dims, out_dims), nn.GELU(),
                                 nn.Linear(out_dims, out_dims))

    @property
    def num_tokens(self) -> int:
        """Output tokens out_h * out_w."""
        return self.out_h * self.out_w

    def forward(self, x: Tensor, keep_mask: Tensor | None = None) -> Tensor:
        """Pool and project BEV tokens.

        Args:
            x: ``[B, bev_h * bev_w, C]`` BEV tokens.
            keep_mask: ``[B, bev_h * bev_w]`` bool; False tokens are pruned:
                each pooled cell averages only its kept tokens (zero if none).

        Returns:
            ``[B, out_h * out_w, D]``.
        """
        b, length, c = x.shape
        if length != self.bev_h * self.bev_w or c != self.in_dims:
            raise ValueError(f"PoolMLPProjector: input must be [B, {self.bev_h}*{self.bev_w}, "
                             f"{self.in_dims}], got {tuple(x.shape)}; check `bev_h`, `bev_w`, "
                             "`in_dims` against the encoder.")
        grid = x.transpose(1, 2).reshape(b, c, self.bev_h, self.bev_w)  # [B, C, Hb, Wb]
        out_hw = (self.out_h, self.out_w)
        if keep_mask is None:
            pooled = F.adaptive_avg_pool2d(grid, out_hw)  # [B, C, oh, ow]
        else:
            if tuple(keep_mask.shape) != (b, length):
                raise ValueError(f"PoolMLPProjector: keep_mask must be [B, L] = {(b, length)}, "
                                 f"got {tuple(keep_mask.shape)}.")
            m = keep_mask.to(x.dtype).view(b, 1, self.bev_h, self.bev_w)  # [B, 1, Hb, Wb]
            total = F.adaptive_avg_pool2d(grid * m, out_hw)
            frac = F.adaptive_avg_pool2d(m, out_hw)  # kept fraction of each pooled cell
            pooled = total / frac.clamp(min=1e-6) * (frac > 0).to(x.dtype)
        tokens = pooled.flatten(2).transpose(1, 2)  # [B, oh*ow, C]
        return self.mlp(tokens)  # [B, oh*ow, D]
