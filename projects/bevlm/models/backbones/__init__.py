"""Image backbones."""
from .timm_backbone import TimmBackbone, find_hf_cache_weights, load_local_state_dict

__all__ = ["TimmBackbone", "find_hf_cache_weights", "load_local_state_dict"]
