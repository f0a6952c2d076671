"""Spatial cross-attention: BEV queries read multi-camera image features.

BEVFormer (Li et al., "BEVFormer: Learning Bird's-Eye-View Representation from
Multi-Camera Images via Spatiotemporal Transformers", ECCV 2022), Sec. 3.3:
each BEV cell is lifted to a pillar of ``num_z_anchors`` 3D reference points,
the points are projected into every camera with ``ego2img``, and the query
samples, with multi-scale deformable attention around the projected points,
only the cameras that see at least one of its points; the per-camera results
are averaged over those cameras.

For speed on CPU the queries visible in each camera are gathered into a
padded batch (``[B * N, max_visible, C]``) before sampling, as BEVFormer does.
That length depends on the camera geometry: under ``torch.export`` (ONNX export)
it is computed in the graph (a data-dependent size), and the visible-first order
comes from cumulative sums instead of a stable sort (ONNX has none). A graph
with fixed shapes instead runs every camera over all ``Q`` queries
(:attr:`SpatialCrossAttention.static_shapes`; the same result, more work).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bevlm.registry import MODELS

from .grid import bev_grid_xy
from .ms_deform_attn import _level_shapes, init_sampling_offsets, multi_scale_deformable_attn


def pillar_reference_points(bev_h: int, bev_w: int, pc_range: Sequence[float],
                            num_z_anchors: int) -> Tensor:
    """3D pillar reference points of every BEV cell (ego frame, metres).

    Heights are the centres of ``num_z_anchors`` equal slices of
    ``[z_min, z_max]``.

    Returns:
        ``[bev_h * bev_w, num_z_anchors, 3]`` (x, y, z), row-major cells.
    """
    xy = bev_grid_xy(bev_h, bev_w, pc_range).reshape(-1, 1, 2)  # [Q, 1, 2]
    z_min, z_max = float(pc_range[2]), float(pc_range[5])
    zs = z_min + (torch.arange(num_z_anchors, dtype=torch.float32) + 0.5) / num_z_anchors * (z_max - z_min)
    q = xy.shape[0]
    return torch.cat([xy.expand(q, num_z_anchors, 2),
                      zs.view(1, -1, 1).expand(q, num_z_anchors, 1)], dim=-1)  # [Q, Z, 3]


def _stable_partition(flags: Tensor) -> Tensor:
    """Indices that put the True entries of ``flags [..., Q]`` first, then the False ones, each group
    in its original order: ``torch.argsort(~flags, stable=True)`` by cumulative sums and a scatter."""
    keep = flags.to(torch.long)
    count = keep.sum(-1, keepdim=True)
    pos = torch.where(flags, keep.cumsum(-1) - 1, count + (1 - keep).cumsum(-1) - 1)  # target slot of each entry
    src = torch.arange(flags.shape[-1], device=flags.device).expand_as(pos)
    return torch.zeros_like(pos).scatter(-1, pos, src)


def ego2img_from_rig(rig: dict, cam_names: Sequence[str]) -> Tensor:
    """Stack ``ego2img = [[K, 0], [0, 1]] @ inv(cam2ego)`` for the given cameras.

    Args:
        rig: camera name -> {"cam2ego": 4x4, "cam2img": 3x3} (e.g.
            :func:`bevlm.structures.nominal_rig`).
        cam_names: camera order of the result.

    Returns:
        ``[N, 4, 4]`` float32; row 2 of ``ego2img @ p`` is the camera depth.
    """
    mats = []
    for name in cam_names:
        k4 = torch.eye(4, dtype=torch.float64)
        k4[:3, :3] = torch.as_tensor(rig[name]["cam2img"], dtype=torch.float64)
        cam2ego = torch.as_tensor(rig[name]["cam2ego"], dtype=torch.float64)
        mats.append(k4 @ torch.linalg.inv(cam2ego))
    return torch.stack(mats).float()


def project_reference_points(ref_3d: Tensor, ego2img: Tensor, img_shape: tuple[int, int],
                             eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Project 3D reference points into every camera.

    Args:
        ref_3d: ``[Q, Z, 3]`` or ``[B, Q, Z, 3]`` ego-frame points.
        ego2img: ``[B, N, 4, 4]`` ego -> pixel projections.
        img_shape: (H, W) of the network input images.
        eps: minimal depth (metres) of a visible point.

    Returns:
        ref_cam: ``[B, N, Q, Z, 2]`` (u / W, v / H); values for points behind a
            camera are meaningless (masked out).
        mask: ``[B, N, Q, Z]`` bool, depth > eps and inside (0, 1) x (0, 1).
    """
    if ego2img.dim() != 4 or ego2img.shape[-2:] != (4, 4):
        raise ValueError(f"bevlm/models/bev/spatial_cross_attn.py: ego2img must be [B, N, 4, 4], "
                         f"got {tuple(ego2img.shape)}; check the `ego2img` metainfo of the samples.")
    b = ego2img.shape[0]
    if ref_3d.dim() == 3:
        ref_3d = ref_3d.unsqueeze(0).expand(b, -1, -1, -1)  # [B, Q, Z, 3]
    ref_3d = ref_3d.to(ego2img.dtype)
    homo = torch.cat([ref_3d, torch.ones_like(ref_3d[..., :1])], dim=-1)  # [B, Q, Z, 4]
    cam = torch.einsum("bnij,bqzj->bnqzi", ego2img, homo)  # [B, N, Q, Z, 4]
    depth = cam[..., 2]
    uv = cam[..., :2] / depth.clamp(min=eps).unsqueeze(-1)  # [B, N, Q, Z, 2] pixels
    h, w = img_shape
    ref_cam = uv / uv.new_tensor([float(w), float(h)])
    mask = ((depth > eps) & (ref_cam[..., 0] > 0.0) & (ref_cam[..., 0] < 1.0)
            & (ref_cam[..., 1] > 0.0) & (ref_cam[..., 1] < 1.0))
    return ref_cam, mask


@MODELS.register_module()
class SpatialCrossAttention(nn.Module):
    """BEVFormer spatial cross-attention (deformable, over the visible cameras).

    Each query samples ``num_points`` points around each of its
    ``num_z_anchors`` projected pillar points on each of ``num_levels``
    levels, per head. Weights are a softmax over (level, anchor, point),
    restricted to the anchors visible in that camera.

    Args:
        embed_dims: channels C of queries and image features.
        num_heads: attention heads (C divisible by it).
        num_levels: feature levels L.
        num_points: sampling points per z-anchor, level and head.
        num_z_anchors: pillar heights Z.
        dropout: dropout on the output before the residual.

    Attributes:
        static_shapes: compute every camera over all ``Q`` queries (invisible ones weighted
            zero) instead of gathering the visible ones into a batch of data-dependent length:
            the same result up to float summation order, fixed tensor shapes (for an exported
            graph whose runtime needs them), about 3x the sampling work. False by default.
    """

    static_shapes: bool = False

    def __init__(self, embed_dims: int = 64, num_heads: int = 4, num_levels: int = 2,
                 num_points: int = 4, num_z_anchors: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f"SpatialCrossAttention: embed_dims={embed_dims} must be divisible by "
                             f"num_heads={num_heads}; fix the encoder config.")
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points, self.num_z_anchors = num_levels, num_points, num_z_anchors
        n_samp = num_heads * num_levels * num_z_anchors * num_points
        self.sampling_offsets = nn.Linear(embed_dims, n_samp * 2)
        self.attention_weights = nn.Linear(embed_dims, n_samp)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR initialisation (offset directions per head, zero weights)."""
        init_sampling_offsets(self.sampling_offsets, self.num_heads,
                              self.num_levels * self.num_z_anchors, self.num_points)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, query_pos: Tensor | None, value: Tensor,
                spatial_shapes: Tensor | list, ref_cam: Tensor, bev_mask: Tensor) -> Tensor:
        """Attend from BEV queries to the cameras that see them.

        Args:
            query: ``[B, Q, C]`` BEV queries (also the residual).
            query_pos: ``[B or 1, Q, C]`` positional embedding or None.
            value: ``[B * N, S, C]`` flattened multi-level camera features
                (camera-major, levels concatenated).
            spatial_shapes: ``[L, 2]`` (h, w) per level (a tensor or a list of pairs).
            ref_cam: ``[B, N, Q, Z, 2]`` normalised projected pillar points.
            bev_mask: ``[B, N, Q, Z]`` visibility.

        Returns:
            ``[B, Q, C]`` updated queries (residual included).
        """
        b, q, c = query.shape
        n = bev_mask.shape[1]
        heads, lv, z, p = self.num_heads, self.num_levels, self.num_z_anchors, self.num_points
        shapes = _level_shapes(spatial_shapes)
        q_in = query if query_pos is None else query + query_pos

        visible = bev_mask.any(-1)  # [B, N, Q]
        if self.static_shapes:
            # fixed shapes: every query in every camera's batch, in grid order (M = Q)
            order, max_len = None, q
            slot_valid = visible  # [B, N, Q]
            q_re = q_in.unsqueeze(1).expand(b, n, q, c)
            ref_re, mask_re = ref_cam, bev_mask
        else:
            counts = visible.sum(-1)  # [B, N]
            if torch.compiler.is_exporting():  # a length computed in the graph (an unbacked size)
                max_len = counts.max().clamp(min=1).item()
                torch._check(max_len >= 1)
                torch._check(max_len <= q)
            else:
                max_len = max(int(counts.max()), 1)
            # Visible queries first (stable), then pad with invisible ones.
            if torch.compiler.is_exporting():  # the same stable partition without a sort (ONNX has no stable one)
                order = _stable_partition(visible)[..., :max_len]
            else:
                order = torch.argsort((~visible).to(torch.int8), dim=-1, stable=True)[..., :max_len]  # [B, N, M]
            slot_valid = torch.arange(max_len, device=query.device) < counts.unsqueeze(-1)  # [B, N, M]

            q_re = torch.gather(q_in.unsqueeze(1).expand(b, n, q, c), 2,
                                order.unsqueeze(-1).expand(b, n, max_len, c))  # [B, N, M, C]
            ref_re = torch.gather(ref_cam, 2, order[..., None, None].expand(b, n, max_len, z, 2))
            mask_re = torch.gather(bev_mask, 2, order.unsqueeze(-1).expand(b, n, max_len, z))
        q_re = q_re.reshape(b * n, max_len, c)  # [B*N, M, C]
        # Points that project far outside the image (behind or beside a camera) reach |x| ~ 1e6 in
        # normalised coordinates: beyond fp16's 65504, and inf * 0 weight would be NaN. They are
        # masked (zero weight) anyway, so clamping them to just outside the image changes nothing in
        # fp32 and keeps fp16 / bf16 finite; visible points lie in [0, 1] and are untouched.
        ref_re = ref_re.reshape(b * n, max_len, z, 2).clamp(-1.0, 2.0).to(query.dtype)  # [B*N, M, Z, 2]
        mask_re = mask_re.reshape(b * n, max_len, z)  # [B*N, M, Z]

        offsets = self.sampling_offsets(q_re).view(b * n, max_len, heads, lv, z, p, 2)
        norm = query.new_tensor([[float(w), float(h)] for h, w in shapes])  # [L, 2] (w, h)
        offsets = offsets / norm.view(1, 1, 1, lv, 1, 1, 2)
        locs = ref_re.view(b * n, max_len, 1, 1, z, 1, 2) + offsets  # [B*N, M, heads, L, Z, P, 2]
        locs = locs.reshape(b * n, max_len, heads, lv, z * p, 2)

        weights = self.attention_weights(q_re).view(b * n, max_len, heads, lv * z * p).softmax(-1)
        weights = weights.view(b * n, max_len, heads, lv, z, p)
        weights = weights * mask_re.view(b * n, max_len, 1, 1, z, 1).to(weights.dtype)
        weights = weights / weights.sum(dim=(3, 4, 5), keepdim=True).clamp(min=1e-6)
        weights = weights.reshape(b * n, max_len, heads, lv, z * p)

        v = self.value_proj(value).view(b * n, -1, heads, c // heads)  # [B*N, S, heads, C_h]
        out = multi_scale_deformable_attn(v, shapes, locs, weights)  # [B*N, M, C]
        out = out.view(b, n * max_len, c) * slot_valid.view(b, n * max_len, 1).to(out.dtype)

        if order is None:  # fixed shapes: slot m of camera k is query m
            slots = out.view(b, n, q, c).sum(1)  # [B, Q, C]
        else:
            slots = query.new_zeros(b, q, c)
            slots = slots.scatter_add(1, order.reshape(b, n * max_len, 1).expand(b, n * max_len, c), out)
        num_cams = visible.sum(1).clamp(min=1).unsqueeze(-1).to(slots.dtype)  # [B, Q, 1]
        slots = slots / num_cams
        return self.dropout(self.output_proj(slots)) + query
