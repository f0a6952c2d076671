"""Temporal self-attention: BEV queries read the previous BEV, aligned by ego motion.

BEVFormer (Li et al., ECCV 2022), Sec. 3.4: the previous BEV is aligned to
the current ego frame, stacked with the current queries, and each query
samples both with deformable attention (offsets and weights predicted from
[prev_bev, query]); the two results are averaged. On the first frame of a
scene (or without a previous BEV) the current queries stand in for the
previous BEV. Here alignment is an explicit ``grid_sample`` warp
(:func:`warp_prev_bev`) driven by :class:`bevlm.structures.EgoMotion`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.registry import MODELS

from .grid import bev_grid_xy, bev_map_to_tokens, bev_tokens_to_map, ego_xy_to_grid_sample
from .ms_deform_attn import init_sampling_offsets, multi_scale_deformable_attn


def inverse_4x4(m: Tensor) -> Tensor:
    """Inverse of ``[..., 4, 4]`` matrices in closed form (adjugate over determinant).

    Elementwise arithmetic only, so a graph export (ONNX has no matrix-inverse operator) can take
    it; :func:`warp_prev_bev` uses it under ``torch.export`` and ``torch.linalg.inv`` otherwise.
    Pass float64 for the accuracy of ``torch.linalg.inv`` on the well-conditioned rigid motions
    of :class:`~bevlm.structures.EgoMotion`; a singular matrix gives inf / NaN, no error.
    """
    a = [[m[..., i, j] for j in range(4)] for i in range(4)]
    # 2x2 minors of rows (0, 1) and of rows (2, 3)
    s0 = a[0][0] * a[1][1] - a[1][0] * a[0][1]
    s1 = a[0][0] * a[1][2] - a[1][0] * a[0][2]
    s2 = a[0][0] * a[1][3] - a[1][0] * a[0][3]
    s3 = a[0][1] * a[1][2] - a[1][1] * a[0][2]
    s4 = a[0][1] * a[1][3] - a[1][1] * a[0][3]
    s5 = a[0][2] * a[1][3] - a[1][2] * a[0][3]
    c5 = a[2][2] * a[3][3] - a[3][2] * a[2][3]
    c4 = a[2][1] * a[3][3] - a[3][1] * a[2][3]
    c3 = a[2][1] * a[3][2] - a[3][1] * a[2][2]
    c2 = a[2][0] * a[3][3] - a[3][0] * a[2][3]
    c1 = a[2][0] * a[3][2] - a[3][0] * a[2][2]
    c0 = a[2][0] * a[3][1] - a[3][0] * a[2][1]
    det = s0 * c5 - s1 * c4 + s2 * c3 + s3 * c2 - s4 * c1 + s5 * c0
    adj = [
        [a[1][1] * c5 - a[1][2] * c4 + a[1][3] * c3, -a[0][1] * c5 + a[0][2] * c4 - a[0][3] * c3,
         a[3][1] * s5 - a[3][2] * s4 + a[3][3] * s3, -a[2][1] * s5 + a[2][2] * s4 - a[2][3] * s3],
        [-a[1][0] * c5 + a[1][2] * c2 - a[1][3] * c1, a[0][0] * c5 - a[0][2] * c2 + a[0][3] * c1,
         -a[3][0] * s5 + a[3][2] * s2 - a[3][3] * s1, a[2][0] * s5 - a[2][2] * s2 + a[2][3] * s1],
        [a[1][0] * c4 - a[1][1] * c2 + a[1][3] * c0, -a[0][0] * c4 + a[0][1] * c2 - a[0][3] * c0,
         a[3][0] * s4 - a[3][1] * s2 + a[3][3] * s0, -a[2][0] * s4 + a[2][1] * s2 - a[2][3] * s0],
        [-a[1][0] * c3 + a[1][1] * c1 - a[1][2] * c0, a[0][0] * c3 - a[0][1] * c1 + a[0][2] * c0,
         -a[3][0] * s3 + a[3][1] * s1 - a[3][2] * s0, a[2][0] * s3 - a[2][1] * s1 + a[2][2] * s0],
    ]
    rows = [torch.stack(row, dim=-1) for row in adj]
    return torch.stack(rows, dim=-2) / det[..., None, None]


def warp_prev_bev(prev_bev: Tensor, prev2curr: Tensor, bev_h: int, bev_w: int,
                  pc_range: Sequence[float]) -> Tensor:
    """Resample the previous BEV into the current ego frame.

    For each current cell centre ``p`` (on the ground, z = 0) the previous
    BEV is read bilinearly at ``inv(prev2curr) @ p``; cells that come from
    outside the previous grid are zero.

    Args:
        prev_bev: ``[B, bev_h * bev_w, C]`` BEV of the previous frame.
        prev2curr: ``[B, 4, 4]`` (or ``[4, 4]``) previous-ego -> current-ego.
        bev_h, bev_w, pc_range: the BEV grid (:mod:`bevlm.models.bev.grid`).

    Returns:
        ``[B, bev_h * bev_w, C]`` previous BEV aligned to the current frame.
    """
    b = prev_bev.shape[0]
    if prev2curr.dim() == 2:
        prev2curr = prev2curr.unsqueeze(0).expand(b, 4, 4)
    xy = bev_grid_xy(bev_h, bev_w, pc_range, device=prev_bev.device).reshape(-1, 2)  # [Q, 2]
    pts = torch.cat([xy, torch.zeros_like(xy[:, :1]), torch.ones_like(xy[:, :1])], dim=-1)  # [Q, 4]
    inverse = inverse_4x4 if torch.compiler.is_exporting() else torch.linalg.inv  # ONNX has no inverse op
    curr2prev = inverse(prev2curr.to(device=prev_bev.device, dtype=torch.float64))
    p_prev = torch.einsum("bij,qj->bqi", curr2prev, pts.double())[..., :2]  # [B, Q, 2]
    grid = ego_xy_to_grid_sample(p_prev, pc_range).to(prev_bev.dtype)
    grid = grid.view(b, bev_h, bev_w, 2)  # [B, Hb, Wb, 2]
    prev_map = bev_tokens_to_map(prev_bev, bev_h, bev_w)  # [B, C, Hb, Wb]
    warped = F.grid_sample(prev_map, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)  # [B, C, Hb, Wb]
    return bev_map_to_tokens(warped)  # [B, Hb*Wb, C]


@MODELS.register_module()
class TemporalSelfAttention(nn.Module):
    """BEVFormer temporal self-attention over [aligned previous BEV, current queries].

    Args:
        embed_dims: channels C.
        num_heads: attention heads (C divisible by it).
        num_points: sampling points per head and per stacked BEV.
        bev_h, bev_w: BEV grid size (the sampled map).
        dropout: dropout on the output before the residual.
    """

    num_bev_queue = 2

    def __init__(self, embed_dims: int = 64, num_heads: int = 4, num_points: int = 4,
                 bev_h: int = 32, bev_w: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f"TemporalSelfAttention: embed_dims={embed_dims} must be divisible by "
                             f"num_heads={num_heads}; fix the encoder config.")
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        self.bev_h, self.bev_w = bev_h, bev_w
        nq = self.num_bev_queue
        self.sampling_offsets = nn.Linear(2 * embed_dims, num_heads * nq * num_points * 2)
        self.attention_weights = nn.Linear(2 * embed_dims, num_heads * nq * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("spatial_shapes", torch.tensor([[bev_h, bev_w]]), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR initialisation (offset directions per head, zero weights)."""
        init_sampling_offsets(self.sampling_offsets, self.num_heads, self.num_bev_queue,
                              self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, query_pos: Tensor | None, ref_2d: Tensor,
                prev_bev: Tensor | None = None, prev_valid: Tensor | None = None) -> Tensor:
        """Deformable self-attention over the previous and current BEV.

        Args:
            query: ``[B, Q, C]`` current BEV queries (also the residual).
            query_pos: ``[B or 1, Q, C]`` positional embedding or None.
            ref_2d: ``[Q, 2]`` cell centres, (x, y) = (column, row) in (0, 1).
            prev_bev: ``[B, Q, C]`` previous BEV already aligned to the current
                frame (:func:`warp_prev_bev`), or None.
            prev_valid: ``[B]`` bool; where False the current query replaces
                ``prev_bev`` (first frame of a scene). None = all valid.

        Returns:
            ``[B, Q, C]`` updated queries (residual included).
        """
        b, q, c = query.shape
        heads, p, nq = self.num_heads, self.num_points, self.num_bev_queue
        if prev_bev is None:
            prev = query
        elif prev_valid is None:
            prev = prev_bev
        else:
            prev = torch.where(prev_valid.view(b, 1, 1).to(query.device), prev_bev, query)
        q_in = query if query_pos is None else query + query_pos
        q_cat = torch.cat([prev, q_in], dim=-1)  # [B, Q, 2C]

        value = torch.stack([prev, query], dim=1).reshape(b * nq, q, c)  # [B*2, Q, C]
        value = self.value_proj(value).view(b * nq, q, heads, c // heads)  # [B*2, Q, heads, C_h]

        offsets = self.sampling_offsets(q_cat).view(b, q, heads, nq, p, 2)
        offsets = offsets / offsets.new_tensor([float(self.bev_w), float(self.bev_h)])
        locs = ref_2d.view(1, q, 1, 1, 1, 2).to(offsets.dtype) + offsets  # [B, Q, heads, 2, P, 2]
        locs = locs.permute(0, 3, 1, 2, 4, 5).reshape(b * nq, q, heads, 1, p, 2)

        weights = self.attention_weights(q_cat).view(b, q, heads, nq, p).softmax(-1)
        weights = weights.permute(0, 3, 1, 2, 4).reshape(b * nq, q, heads, 1, p)

        # the level shape as Python ints (not the buffer): a constant under graph export
        out = multi_scale_deformable_attn(value, [(self.bev_h, self.bev_w)], locs, weights)  # [B*2, Q, C]
        out = out.view(b, nq, q, c).mean(1)  # [B, Q, C]
        return self.dropout(self.output_proj(out)) + query
