"""BEVFormer-lite encoder, its attention blocks, the BEV grid and the camera-token baseline."""
from .camera_tokens import CameraPatchTokens
from .encoder import BEVFormerLiteEncoder
from .grid import (bev_cell_size, bev_grid_normalized, bev_grid_xy, bev_ij_to_ego_xy,
                   bev_map_to_tokens, bev_tokens_to_map, ego_xy_to_bev_ij, ego_xy_to_grid_sample)
from .ms_deform_attn import multi_scale_deformable_attn, multi_scale_deformable_attn_reference
from .spatial_cross_attn import (SpatialCrossAttention, ego2img_from_rig, pillar_reference_points,
                                 project_reference_points)
from .temporal_self_attn import TemporalSelfAttention, warp_prev_bev

__all__ = [
    "BEVFormerLiteEncoder", "CameraPatchTokens", "SpatialCrossAttention", "TemporalSelfAttention",
    "bev_cell_size", "bev_grid_normalized", "bev_grid_xy", "bev_ij_to_ego_xy", "bev_map_to_tokens",
    "bev_tokens_to_map", "ego_xy_to_bev_ij", "ego_xy_to_grid_sample", "ego2img_from_rig",
    "multi_scale_deformable_attn", "multi_scale_deformable_attn_reference",
    "pillar_reference_points", "project_reference_points", "warp_prev_bev",
]
