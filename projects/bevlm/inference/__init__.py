"""Efficient inference: QA-round policies, pruning, quantisation, self-speculative decoding,
variants and the side-by-side benchmark. Sub-packages are imported where used, because some
of them import the model package (and the model imports the QA policy)."""
