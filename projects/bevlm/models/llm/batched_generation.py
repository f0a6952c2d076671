"""Greedy decoding of many questions of one frame in a single batch over the shared prefix.

Batch-1 decoding on a CPU is bound by memory bandwidth (every token reads all weights), so
answering the Q questions of a frame as one batch of Q rows costs little more than one row:
each step reads the weights once for all rows. The prefix KV cache is repeated Q times
(its keys/values are shared content); questions of different lengths are left-padded *between*
the prefix and the question, masked out, and given position ids that continue the prefix
without a gap, so every row computes the same function as when it is decoded alone. Rows that finish (stop
token or budget) are dropped from the batch and its cache, so a few long answers do not make
every short one pay for their length.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .cache_api import cache_kwargs, output_cache
from .generation import PrefixCache, lm_device
from .stopping import RepetitionStop


def left_padded_queries(cache: PrefixCache, queries: list[list[int]], pad_id: int,
                        device: torch.device) -> tuple:
    """Batch inputs of Q queries continuing one prefix cache, left-padded between the two.

    Returns:
        ``(ids [Q, Lmax], mask [Q, C + Lmax], position_ids [Q, Lmax], past)``: the padding slots
        are masked out and the position ids continue the prefix without a gap; ``past`` is a
        copy of the cache repeated Q times (the frame's cache is not mutated).
    """
    n, lmax = len(queries), max(len(q) for q in queries)
    p = cache.prefix_len                              # position id of the first query token
    c = cache.past_key_values.get_seq_length()        # cached entries (< p when tokens were pruned)
    ids = torch.full((n, lmax), pad_id, dtype=torch.long, device=device)  # [Q, Lmax] left-padded
    mask = torch.zeros((n, c + lmax), dtype=torch.long, device=device)    # [Q, C + Lmax]
    mask[:, :c] = 1
    pos = torch.zeros((n, lmax), dtype=torch.long, device=device)
    for r, q in enumerate(queries):
        ids[r, lmax - len(q):] = torch.tensor(q, device=device)
        mask[r, c + lmax - len(q):] = 1
        pos[r, lmax - len(q):] = torch.arange(p, p + len(q), device=device)
    past = copy.deepcopy(cache.past_key_values)
    past.batch_repeat_interleave(n)
    return ids, mask, pos, past


@torch.no_grad()
def greedy_batch_from_cache(lm: nn.Module, cache: PrefixCache, queries: list[list[int]],
                            max_new_tokens: int | list[int], stop_ids: frozenset[int],
                            pad_id: int, stop_rule: RepetitionStop | None = None) -> list[list[int]]:
    """Greedy answers of several queries that share one prefix cache.

    Args:
        lm: the ``*ForCausalLM`` that produced ``cache``.
        cache: the frame's :class:`PrefixCache` (not mutated).
        queries: token ids of each ``question + query_suffix``.
        max_new_tokens: budget for all rows, or one budget per row.
        stop_ids: ids that end an answer (not returned).
        pad_id: id used for the padding slots (masked, never attended).
        stop_rule: optional loop stop rule, checked per row after every token.

    Returns:
        generated ids per query, stop token excluded (same as decoding each alone).
    """
    n = len(queries)
    if n == 0:
        return []
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    device = lm_device(lm)
    ids, mask, pos, past = left_padded_queries(cache, queries, pad_id, device)
    next_pos = torch.tensor([cache.prefix_len + len(q) for q in queries], device=device)  # [Q]
    out_ids: list[list[int]] = [[] for _ in range(n)]
    active = [r for r in range(n) if budgets[r] > 0]  # original row index of each batch row
    if len(active) < n:
        past.batch_select_indices(torch.tensor(active, device=device))
        ids, mask, pos, next_pos = ids[active], mask[active], pos[active], next_pos[active]
    inputs = ids
    while active:
        out = lm(input_ids=inputs, attention_mask=mask, position_ids=pos, **cache_kwargs(lm, past),
                 use_cache=True, logits_to_keep=1)
        past = output_cache(out)
        tokens = out.logits[:, -1].argmax(-1)  # [A]
        keep = []
        for k, r in enumerate(active):
            tok = int(tokens[k])
            if tok in stop_ids:
                continue
            out_ids[r].append(tok)
            if stop_rule is not None and (cut := stop_rule.truncate_to(out_ids[r])) is not None:
                del out_ids[r][cut:]
                continue
            if len(out_ids[r]) < budgets[r]:
                keep.append(k)
        if len(keep) < len(active):  # drop finished rows: later steps cost only the live ones
            if not keep:
                break
            sel = torch.tensor(keep, device=device)
            past.batch_select_indices(sel)
            tokens, mask, next_pos = tokens[sel], mask[sel], next_pos[sel]
            active = [active[k] for k in keep]
        inputs = tokens[:, None]                                           # [A, 1]
        pos = next_pos[:, None].clone()                                    # [A, 1]
        next_pos = next_pos + 1
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
    return out_ids


@torch.no_grad()
def answer_logprobs(lm: nn.Module, cache: PrefixCache, queries: list[list[int]], answers: list[list[int]],
                    pad_id: int) -> list[float]:
    """Log-probability of each given answer continuing its query after one prefix cache.

    One forward over the rows ``query + answer`` (left-padded between the prefix and the query, as
    :func:`greedy_batch_from_cache` decodes them), summing ``log p(answer token | everything
    before it)`` over each answer's tokens: the probability that the model, asked that query,
    produces exactly that answer (its end token included when ``answers`` carry it).

    Args:
        lm: the ``*ForCausalLM`` that produced ``cache``.
        cache: the frame's :class:`PrefixCache` (not mutated).
        queries: token ids of each ``question + query_suffix`` (at least one token each).
        answers: token ids of each answer (at least one token each).
        pad_id: id used for the padding slots (masked, never attended).

    Returns:
        One summed log-probability (natural log) per row.
    """
    if len(queries) != len(answers):
        raise ValueError(f"answer_logprobs: {len(queries)} queries but {len(answers)} answers")
    if not queries:
        return []
    if any(not q for q in queries) or any(not a for a in answers):
        raise ValueError("answer_logprobs: every query and every answer needs at least one token")
    device = lm_device(lm)
    ids, mask, pos, past = left_padded_queries(cache, [q + a for q, a in zip(queries, answers)], pad_id, device)
    # rows are right-aligned: answer token j of a row sits at column L - m + j and is predicted by the
    # logits one column before, so only the last max(m) + 1 columns are projected to the vocabulary
    keep = max(len(a) for a in answers) + 1
    out = lm(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kwargs(lm, past), use_cache=True,
             logits_to_keep=keep)
    logp = out.logits[:, -keep:].float().log_softmax(-1)  # [R, keep, V]
    scores = []
    for r, ans in enumerate(answers):
        m = len(ans)
        cols = torch.arange(keep - m - 1, keep - 1, device=device)
        scores.append(float(logp[r, cols, torch.tensor(ans, device=device)].sum()))
    return scores
