"""Greedy decoding of many questions of one frame in a single batch over the shared prefix.

Batch-1 decoding on a CPU is bound by memory bandwidth (every token reads all weights), so
answering the Q questions of a frame as one batch of Q rows costs little more than one row:
each step reads the weights once for all rows. The prefix KV cache is repeated Q times
(its keys/values are shared content); questions of different lengths are left-padded *between*
the prefix and the question, masked out, and given position ids that continue the prefix
without a gap, so every row computes the same function as when it is decoded alone. Rows that finish (stop
token or budget) are dropped from the batch and its cache, so a few long answers do not make
every short one pay for their length.

The first forward of a batch (the queries after the prefix) is where padding costs most: one long
question (a multiple choice with its options) pads every row to its length. :func:`prefill_queries`
therefore prefills rows of similar length together (groups chosen to minimise padded tokens plus a
per-forward overhead) and assembles their caches into the same left-padded layout, so the decoding
steps that follow see exactly what one padded forward would have left.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .cache_api import cache_kwargs, output_cache
from .generation import PrefixCache, choose_token, lm_device
from .stopping import RepetitionStop


def _padded_mask(cached: int, lmax: int, lengths: list[int], device: torch.device) -> torch.Tensor:
    """``[Q, cached + lmax]`` attention mask: the cached prefix and each row's last ``lengths[r]`` slots."""
    mask = torch.zeros((len(lengths), cached + lmax), dtype=torch.long, device=device)
    mask[:, :cached] = 1
    for r, length in enumerate(lengths):
        mask[r, cached + lmax - length:] = 1
    return mask


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
    mask = _padded_mask(c, lmax, [len(q) for q in queries], device)       # [Q, C + Lmax]
    pos = torch.zeros((n, lmax), dtype=torch.long, device=device)
    for r, q in enumerate(queries):
        ids[r, lmax - len(q):] = torch.tensor(q, device=device)
        pos[r, lmax - len(q):] = torch.arange(p, p + len(q), device=device)
    past = copy.deepcopy(cache.past_key_values)
    past.batch_repeat_interleave(n)
    return ids, mask, pos, past


#: Cost of one extra prefill forward, in padded query tokens (:func:`query_groups`): a forward reads every
#: weight once and has a fixed Python / kernel-launch cost. About 30 tokens on a 2-core CPU with the
#: 135M default (0.1 s per forward against 3 ms per token, single thread, measured on the default model).
GROUP_OVERHEAD_TOKENS = 32


def query_groups(lengths: list[int], overhead: float = GROUP_OVERHEAD_TOKENS) -> list[list[int]]:
    """Rows grouped for prefilling: the partition that minimises padded tokens + ``overhead`` per group.

    Rows sorted by length are split into contiguous runs (optimal for this cost: a group costs its
    size times its longest row); dynamic programming over the split points.

    Args:
        lengths: token count of each row.
        overhead: cost of one forward in tokens (0: every distinct length its own forward; large:
            one forward for all).

    Returns:
        row indices per group (each group sorted by length, groups by their longest row).
    """
    if overhead < 0:
        raise ValueError(f"query_groups: overhead={overhead} must be >= 0")
    order = sorted(range(len(lengths)), key=lambda r: (lengths[r], r))
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            c = best[i] + overhead + (j - i) * longest
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def _plain_dynamic_layers(past) -> bool:
    """Whether ``past`` is a DynamicCache of full-attention layers (keys/values ``[B, H, L, D]`` that only grow)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(past, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@torch.no_grad()
def prefill_queries(lm: nn.Module, cache: PrefixCache, queries: list[list[int]], pad_id: int,
                    device: torch.device, overhead: float = GROUP_OVERHEAD_TOKENS) -> tuple:
    """Prefill Q queries after one prefix cache, returning the next-token logits and a batch cache.

    The result is the state one forward over :func:`left_padded_queries` leaves (same mask, same
    cache layout with the padding slots between prefix and query; the padding slots' entries are
    zeros instead of the pad token's keys, both masked), but rows of similar length are computed
    together (:func:`query_groups`), so a long query does not make every row pay for its length.
    Caches other than a DynamicCache of full-attention layers (sliding windows) get the one
    padded forward.

    Args:
        lm: the ``*ForCausalLM`` that produced ``cache``.
        cache: the frame's :class:`PrefixCache` (not mutated).
        queries: token ids of each query (at least one each).
        pad_id: id used for the padding slots.
        device: the model's device.
        overhead: one forward's cost in tokens (``float('inf')``: always one padded forward).

    Returns:
        ``(logits [Q, V], mask [Q, C + Lmax], past, forwards)``: the logits after each query's last
        token, the attention mask, the batch KV cache, the number of forwards run.
    """
    n, lmax = len(queries), max(len(q) for q in queries)
    c = cache.past_key_values.get_seq_length()
    groups = query_groups([len(q) for q in queries], overhead) if overhead != float("inf") else [list(range(n))]
    if len(groups) > 1 and not _plain_dynamic_layers(cache.past_key_values):
        groups = [list(range(n))]
    if len(groups) == 1:
        ids, mask, pos, past = left_padded_queries(cache, queries, pad_id, device)
        out = lm(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kwargs(lm, past), use_cache=True,
                 logits_to_keep=1)
        return out.logits[:, -1], mask, output_cache(out), 1
    logits = [None] * n
    keys: list[list] = []    # per group: per layer (keys, values) [g, H, C + Lmax, D]
    past = None
    for rows in groups:
        ids, mask, pos, part = left_padded_queries(cache, [queries[r] for r in rows], pad_id, device)
        gmax = ids.shape[1]
        out = lm(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kwargs(lm, part), use_cache=True,
                 logits_to_keep=1)
        for k, r in enumerate(rows):
            logits[r] = out.logits[k, -1]
        part = output_cache(out)
        grown = []
        for layer in part.layers:  # widen the padding slots from gmax to lmax (zeros, masked)
            kv = []
            for t in (layer.keys, layer.values):
                gap = t.new_zeros(t.shape[0], t.shape[1], lmax - gmax, t.shape[3])
                kv.append(torch.cat([t[:, :, :c], gap, t[:, :, c:]], dim=2))
            grown.append(kv)
        keys.append(grown)
        past = part if past is None else past
    order = torch.tensor([r for rows in groups for r in rows], device=device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=device)
    for i, layer in enumerate(past.layers):  # the groups' rows, back in the queries' order
        layer.keys = torch.cat([g[i][0] for g in keys], dim=0).index_select(0, inverse)
        layer.values = torch.cat([g[i][1] for g in keys], dim=0).index_select(0, inverse)
    return torch.stack(logits), _padded_mask(c, lmax, [len(q) for q in queries], device), past, len(groups)


@torch.no_grad()
def greedy_batch_from_cache(lm: nn.Module, cache: PrefixCache, queries: list[list[int]],
                            max_new_tokens: int | list[int], stop_ids: frozenset[int],
                            pad_id: int, stop_rule: RepetitionStop | None = None,
                            overhead: float = GROUP_OVERHEAD_TOKENS,
                            end_checks: list | None = None) -> list[list[int]]:
    """Greedy answers of several queries that share one prefix cache.

    Args:
        lm: the ``*ForCausalLM`` that produced ``cache``.
        cache: the frame's :class:`PrefixCache` (not mutated).
        queries: token ids of each ``question + query_suffix``.
        max_new_tokens: budget for all rows, or one budget per row.
        stop_ids: ids that end an answer (not returned).
        pad_id: id used for the padding slots (masked, never attended).
        stop_rule: optional loop stop rule, checked per row after every token.
        overhead: the query prefill's per-forward cost in tokens (:func:`prefill_queries`).
        end_checks: optional :class:`~bevlm.models.llm.stopping.AnswerGuard` per query (None entries:
            unguarded), as ``end_check`` of :func:`~bevlm.models.llm.generation.greedy_from_cache`.

    Returns:
        generated ids per query, stop token excluded (same as decoding each alone).
    """
    n = len(queries)
    if n == 0:
        return []
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    device = lm_device(lm)
    out_ids: list[list[int]] = [[] for _ in range(n)]
    active = [r for r in range(n) if budgets[r] > 0]  # original row index of each batch row
    if not active:
        return out_ids
    logits, mask, past, _ = prefill_queries(lm, cache, [queries[r] for r in active], pad_id, device, overhead)
    next_pos = torch.tensor([cache.prefix_len + len(queries[r]) for r in active], device=device)  # [A]
    while True:
        tokens = logits.argmax(-1)  # [A]
        keep = []
        for k, r in enumerate(active):
            tok = int(tokens[k])
            if end_checks is not None and end_checks[r] is not None:
                tok = choose_token(logits[k], stop_ids, end_checks[r], out_ids[r], token=tok)
                tokens[k] = tok
            if tok in stop_ids:
                continue
            out_ids[r].append(tok)
            if stop_rule is not None and (cut := stop_rule.truncate_to(out_ids[r])) is not None:
                del out_ids[r][cut:]
                continue
            if len(out_ids[r]) < budgets[r]:
                keep.append(k)
        if not keep:
            break
        if len(keep) < len(active):  # drop finished rows: later steps cost only the live ones
            sel = torch.tensor(keep, device=device)
            past.batch_select_indices(sel)
            tokens, mask, next_pos = tokens[sel], mask[sel], next_pos[sel]
            active = [active[k] for k in keep]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
        out = lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None].clone(),
                 **cache_kwargs(lm, past), use_cache=True, logits_to_keep=1)
        past = output_cache(out)
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
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
