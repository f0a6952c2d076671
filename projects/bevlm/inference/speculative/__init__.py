"""Training-free self-speculative decoding (n-gram lookup, answer datastore, layer-skip drafting,
low-precision copies of the same weights as draft models), greedy-exact."""
from .decoder import SelfSpeculativeDecoder, SpecStats
from .layer_skip import LayerSkipModel, causal_mask, crop_cache
from .ngram import NgramDatastore, ngram_propose
from .quant_draft import QuantDrafter, QuantDraftSetting, build_draft_lm, draft_resident_bytes
from .search import SkipSearchResult, search_skip_layers

__all__ = ["LayerSkipModel", "NgramDatastore", "QuantDraftSetting", "QuantDrafter", "SelfSpeculativeDecoder",
           "SkipSearchResult", "SpecStats", "build_draft_lm", "causal_mask", "crop_cache", "draft_resident_bytes",
           "ngram_propose", "search_skip_layers"]
