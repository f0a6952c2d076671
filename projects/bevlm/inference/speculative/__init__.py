"""Self-speculative decoding, greedy-exact: training-free drafts (n-gram lookup, answer datastore,
layer-skip drafting, low-precision copies of the same weights as draft models) and trained draft
heads on the verifier's own hidden state."""
from .decoder import SelfSpeculativeDecoder, SpecStats
from .draft_heads import DraftHeads, load_draft_heads, save_draft_heads, train_draft_heads
from .layer_skip import LayerSkipModel, causal_mask, crop_cache
from .ngram import NgramDatastore, ngram_propose
from .quant_draft import QuantDrafter, QuantDraftSetting, build_draft_lm, draft_resident_bytes
from .search import SkipSearchResult, search_skip_layers

__all__ = ["DraftHeads", "LayerSkipModel", "NgramDatastore", "QuantDraftSetting", "QuantDrafter", "SelfSpeculativeDecoder",
           "SkipSearchResult", "SpecStats", "build_draft_lm", "causal_mask", "crop_cache", "draft_resident_bytes",
           "load_draft_heads", "ngram_propose", "save_draft_heads", "search_skip_layers", "train_draft_heads"]
