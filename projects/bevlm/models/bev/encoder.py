"""BEVFormer-lite: a small, pure-PyTorch BEVFormer encoder.

BEVFormer (Li et al., ECCV 2022): learnable BEV queries on the grid of
:mod:`bevlm.models.bev.grid`, refined by ``num_layers`` layers of
temporal self-attention -> norm -> spatial cross-attention -> norm -> FFN ->
norm. Temporal state is explicit: the previous BEV and the ego motion are
arguments, nothing is kept on the module.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bevlm.registry import MODELS
from bevlm.structures import EgoMotion

from .grid import bev_grid_normalized
from .spatial_cross_attn import SpatialCrossAttention, pillar_reference_points, project_reference_points
from .temporal_self_attn import TemporalSelfAttention, warp_prev_bev


class BEVFFN(nn.Module):
    """Two-layer feed-forward block with residual: ``x + drop(W2 drop(relu(W1 x)))``."""

    def __init__(self, embed_dims: int, ffn_dims: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(embed_dims, ffn_dims), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout), nn.Linear(ffn_dims, embed_dims),
                                    nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class BEVFormerLayer(nn.Module):
    """One encoder layer: [TSA -> norm] -> SCA -> norm -> FFN -> norm.

    Args:
        embed_dims, num_heads, num_levels, num_points, num_z_anchors, bev_h,
        bev_w, ffn_dims, dropout: see :class:`BEVFormerLiteEncoder`.
        use_temporal: build and run temporal self-attention.
    """

    def __init__(self, embed_dims: int, num_heads: int, num_levels: int, num_points: int,
                 num_z_anchors: int, bev_h: int, bev_w: int, ffn_dims: int, dropout: float,
                 use_temporal: bool) -> None:
        super().__init__()
        self.use_temporal = use_temporal
        if use_temporal:
            self.tsa = TemporalSelfAttention(embed_dims, num_heads, num_points, bev_h, bev_w, dropout)
            self.norm_tsa = nn.LayerNorm(embed_dims)
        self.sca = SpatialCrossAttention(embed_dims, num_heads, num_levels, num_points,
                                         num_z_anchors, dropout)
        self.norm_sca = nn.LayerNorm(embed_dims)
        self.ffn = BEVFFN(embed_dims, ffn_dims, dropout)
        self.norm_ffn = nn.LayerNorm(embed_dims)

    def forward(self, query: Tensor, query_pos: Tensor, ref_2d: Tensor, prev_bev: Tensor | None,
                prev_valid: Tensor | None, value: Tensor, spatial_shapes: list,
                ref_cam: Tensor, bev_mask: Tensor) -> Tensor:
        if self.use_temporal:
            query = self.norm_tsa(self.tsa(query, query_pos, ref_2d, prev_bev, prev_valid))
        query = self.norm_sca(self.sca(query, query_pos, value, spatial_shapes, ref_cam, bev_mask))
        return self.norm_ffn(self.ffn(query))


@MODELS.register_module()
class BEVFormerLiteEncoder(nn.Module):
    """Multi-camera features -> BEV tokens ``[B, bev_h * bev_w, C]``.

    Args:
        embed_dims: channels C of the BEV and of every image feature level.
        bev_h, bev_w: BEV grid size (rows along x, columns along y; see
            :mod:`bevlm.models.bev.grid`).
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) ego-frame metres.
        num_layers: encoder layers.
        num_heads: attention heads.
        num_levels: image feature levels consumed (must equal the neck's outputs).
        num_points: sampling points per head (per z-anchor in SCA).
        num_z_anchors: pillar heights per BEV cell.
        num_cams: cameras N (one learned embedding each).
        ffn_dims: hidden size of the FFN.
        use_temporal: use temporal self-attention (False: SCA + FFN only).
        dropout: dropout in attention outputs and FFN.
        gradient_checkpointing: in training mode with gradients enabled, run each layer under
            ``torch.utils.checkpoint`` (``use_reentrant=False``, RNG state preserved, so dropout
            masks repeat): its activations (deformable-attention samples, FFN) are recomputed in
            backward instead of stored. Same loss and gradients; no effect in eval mode or under
            ``no_grad`` (history frames, inference).
    """

    def __init__(self, embed_dims: int = 64, bev_h: int = 32, bev_w: int = 32,
                 pc_range: Sequence[float] = (-32.0, -32.0, -3.0, 32.0, 32.0, 3.0),
                 num_layers: int = 2, num_heads: int = 4, num_levels: int = 2,
                 num_points: int = 4, num_z_anchors: int = 4, num_cams: int = 6,
                 ffn_dims: int = 128, use_temporal: bool = True, dropout: float = 0.0,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        if embed_dims % 2 != 0:
            raise ValueError(f"BEVFormerLiteEncoder: embed_dims={embed_dims} must be even "
                             "(row/column positional halves); fix the encoder config.")
        self.embed_dims, self.bev_h, self.bev_w = embed_dims, bev_h, bev_w
        self.pc_range = tuple(float(v) for v in pc_range)
        self.num_layers, self.num_levels, self.num_cams = num_layers, num_levels, num_cams
        self.use_temporal = use_temporal
        self.gradient_checkpointing = bool(gradient_checkpointing)

        self.bev_embedding = nn.Embedding(bev_h * bev_w, embed_dims)
        self.row_embed = nn.Embedding(bev_h, embed_dims // 2)
        self.col_embed = nn.Embedding(bev_w, embed_dims // 2)
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        self.level_embeds = nn.Parameter(torch.empty(num_levels, embed_dims))
        nn.init.normal_(self.cams_embeds)
        nn.init.normal_(self.level_embeds)
        self.layers = nn.ModuleList(
            BEVFormerLayer(embed_dims, num_heads, num_levels, num_points, num_z_anchors,
                           bev_h, bev_w, ffn_dims, dropout, use_temporal)
            for _ in range(num_layers))
        self.register_buffer("ref_3d", pillar_reference_points(bev_h, bev_w, self.pc_range,
                                                               num_z_anchors), persistent=False)
        self.register_buffer("ref_2d", bev_grid_normalized(bev_h, bev_w), persistent=False)

    def bev_pos(self) -> Tensor:
        """Learned row/column positional embedding ``[1, bev_h * bev_w, C]``."""
        rows = self.row_embed.weight.unsqueeze(1).expand(self.bev_h, self.bev_w, -1)
        cols = self.col_embed.weight.unsqueeze(0).expand(self.bev_h, self.bev_w, -1)
        return torch.cat([rows, cols], dim=-1).reshape(1, self.bev_h * self.bev_w, -1)  # [1, Q, C]

    def _flatten_feats(self, mlvl_feats: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Add camera/level embeddings and flatten to ``[B * N, S, C]`` + the L level shapes (h, w).

        The shapes stay Python ints (not a tensor), so a graph export (``torch.export``) sees them
        as constants of the traced image size.
        """
        if len(mlvl_feats) != self.num_levels:
            raise ValueError(
                f"BEVFormerLiteEncoder: got {len(mlvl_feats)} feature levels but num_levels="
                f"{self.num_levels}; make the neck's `num_outs` equal the encoder's `num_levels`.")
        flat, shapes = [], []
        for lvl, feat in enumerate(mlvl_feats):
            if feat.dim() != 5 or feat.shape[1] != self.num_cams or feat.shape[2] != self.embed_dims:
                raise ValueError(
                    f"BEVFormerLiteEncoder: level {lvl} features must be [B, N={self.num_cams}, "
                    f"C={self.embed_dims}, h, w], got {tuple(feat.shape)}; check the neck's "
                    "`out_channels` and the encoder's `num_cams`/`embed_dims`.")
            b, n, c, h, w = feat.shape
            x = feat.flatten(3).transpose(2, 3)  # [B, N, h*w, C]
            x = x + self.cams_embeds.view(1, n, 1, c) + self.level_embeds[lvl].view(1, 1, 1, c)
            flat.append(x)
            shapes.append((int(h), int(w)))
        value = torch.cat(flat, dim=2)  # [B, N, S, C]
        b, n, s, c = value.shape
        return value.reshape(b * n, s, c), shapes  # [B*N, S, C], L x (h, w)

    def forward(self, mlvl_feats: list[Tensor], ego2img: Tensor, img_shape: tuple[int, int],
                prev_bev: Tensor | None = None, ego_motion: EgoMotion | None = None,
                num_layers: int | None = None) -> Tensor:
        """Encode multi-camera features into BEV tokens.

        Args:
            mlvl_feats: ``num_levels`` tensors ``[B, N, C, h_l, w_l]``.
            ego2img: ``[B, N, 4, 4]`` ego -> pixel projection of the input images.
            img_shape: (H, W) of the input images.
            prev_bev: ``[B, bev_h * bev_w, C]`` BEV of the previous frame (in its
                own ego frame) or None. Ignored when ``use_temporal=False``.
            ego_motion: previous -> current motion (``prev2curr [B, 4, 4]``,
                ``valid [B]``); required with ``prev_bev``. Where ``valid`` is
                False the previous BEV is not used.
            num_layers: run only the first ``num_layers`` layers (early exit);
                None = all.

        Returns:
            ``[B, bev_h * bev_w, C]`` BEV tokens (row-major grid).
        """
        num_layers = self.num_layers if num_layers is None else int(num_layers)
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"BEVFormerLiteEncoder: num_layers={num_layers} must be in "
                             f"[1, {self.num_layers}].")
        value, spatial_shapes = self._flatten_feats(mlvl_feats)
        b = mlvl_feats[0].shape[0]
        if tuple(ego2img.shape) != (b, self.num_cams, 4, 4):
            raise ValueError(f"BEVFormerLiteEncoder: ego2img must be [B={b}, N={self.num_cams}, 4, 4], "
                             f"got {tuple(ego2img.shape)}; check the samples' `ego2img` metainfo.")
        ref_cam, bev_mask = project_reference_points(self.ref_3d, ego2img.float(), img_shape)

        aligned, prev_valid = None, None
        if self.use_temporal and prev_bev is not None:
            if ego_motion is None:
                raise ValueError("BEVFormerLiteEncoder: prev_bev was given without ego_motion; pass "
                                 "EgoMotion(prev2curr, valid) (valid=False on a scene's first frame).")
            aligned = warp_prev_bev(prev_bev, ego_motion.prev2curr, self.bev_h, self.bev_w,
                                    self.pc_range)
            valid = ego_motion.valid
            prev_valid = (valid.to(device=prev_bev.device, dtype=torch.bool).reshape(-1).expand(b)
                          if torch.is_tensor(valid) else torch.full((b,), bool(valid),
                                                                    device=prev_bev.device))

        query = self.bev_embedding.weight.unsqueeze(0).expand(b, -1, -1)  # [B, Q, C]
        query_pos = self.bev_pos()  # [1, Q, C]
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers[:num_layers]:
            args = (query, query_pos, self.ref_2d, aligned, prev_valid, value, spatial_shapes, ref_cam, bev_mask)
            query = checkpoint(layer, *args, use_reentrant=False) if recompute else layer(*args)
        return query  # [B, Hb*Wb, C]
