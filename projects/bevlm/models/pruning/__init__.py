"""Encoder and prefill cost reduction: FastV visual-token pruning, BEV-side (occupancy) pruning,
BEV encoder early exit, and their FLOP accounting."""
from .bev_keep import bev_keep_for_model, bev_token_keep, pool_token_scores, projector_grid
from .early_exit import bev_encoder_flops_by_layers
from .fastv import PrunedPrefixCache, fastv_prefill, fastv_scores, prefill_kept
from .flops import count_pruned_flops, flops_table, prefill_flops
from .selection import num_kept, select_tokens, top_indices
from .setting import PruningSetting, frame_prefix, prefill_with_setting, prune_visual_tokens

__all__ = [
    "PrunedPrefixCache", "PruningSetting", "bev_encoder_flops_by_layers", "bev_keep_for_model", "bev_token_keep",
    "count_pruned_flops", "fastv_prefill", "fastv_scores", "flops_table", "frame_prefix", "num_kept",
    "pool_token_scores", "prefill_flops", "prefill_kept", "prefill_with_setting", "projector_grid",
    "prune_visual_tokens", "select_tokens", "top_indices",
]
