"""Training-free self-speculative decoding (layer-skip drafting + n-gram lookup), greedy-exact."""
from .decoder import SelfSpeculativeDecoder, SpecStats
from .layer_skip import LayerSkipModel, causal_mask, crop_cache
from .ngram import NgramDatastore, ngram_propose
from .search import SkipSearchResult, search_skip_layers

__all__ = ["LayerSkipModel", "NgramDatastore", "SelfSpeculativeDecoder", "SkipSearchResult", "SpecStats", "causal_mask",
           "crop_cache", "ngram_propose", "search_skip_layers"]
