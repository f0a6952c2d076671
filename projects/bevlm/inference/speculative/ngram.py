"""N-gram (prompt lookup) drafting.

Prompt lookup decoding (Saxena, 2023, "Prompt Lookup Decoding",
github.com/apoorvumang/prompt-lookup-decoding): when the output copies spans
of the input (DriveLM answers repeat the ``<c1,CAM_FRONT,160.3,92.1>`` tags of
their questions), the tokens that followed the latest earlier occurrence of
the current suffix n-gram are a free draft. No model runs at all.
"""
from __future__ import annotations


def ngram_propose(tokens: list[int], max_ngram: int, min_ngram: int, max_tokens: int) -> list[int]:
    """Continuation of the longest, most recent earlier match of the suffix n-gram.

    For ``n`` from ``max_ngram`` down to ``min_ngram``: the last ``n`` tokens
    are searched for earlier in ``tokens`` (latest occurrence first, the
    suffix itself excluded); the first hit with a non-empty continuation
    returns up to ``max_tokens`` tokens that followed it.

    Args:
        tokens: the whole visible sequence (extra context, question, answer so far).
        max_ngram: longest n-gram tried (>= 1).
        min_ngram: shortest n-gram tried (1 <= min_ngram <= max_ngram).
        max_tokens: longest proposal.

    Returns:
        proposed ids (possibly empty: no match).
    """
    if not 1 <= min_ngram <= max_ngram:
        raise ValueError(f"ngram_propose: need 1 <= min_ngram ({min_ngram}) <= max_ngram ({max_ngram})")
    total = len(tokens)
    if max_tokens <= 0:
        return []
    for n in range(min(max_ngram, total - 1), min_ngram - 1, -1):
        suffix = tokens[total - n:]
        # A match starting at `start` (start + n < total) has a continuation; latest first.
        for start in range(total - n - 1, -1, -1):
            if tokens[start:start + n] == suffix:
                return tokens[start + n:start + n + max_tokens]
    return []
