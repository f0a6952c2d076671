"""Learned query tokens placed AFTER QA blocks: read out in training and from a prefix cache.

The trajectory queries of ``BEVVLM(traj_placement='after_qa')`` follow some of the frame's QA
blocks (its perception and prediction rounds) instead of sitting in the prefix. Both phases give
the K query tokens the same view (:func:`~bevlm.models.llm.packing.build_packed_batch` with
``query_slots``)::

    [prompt text][P prefix embeddings] [block 1] ... [block n] [K queries]
                                        each block: the prefix + itself (causal), positions from T0 + P
                                        queries:    the prefix + the blocks they read + themselves,
                                                    positions from T0 + P + the longest block read

* training (:func:`forward_train_with_queries`): the queries are K more slots of the packed batch,
  after the row's blocks; the blocks carry their ground-truth answers and their LM loss is the
  one of the same batch without the slots (no block attends to a slot);
* inference (:func:`hidden_after_blocks`): ONE forward over the read blocks (the questions with the
  answers the model generated) and the K queries, on a copy of the frame's prefix KV cache. Each
  block sees exactly what it saw while it was answered (the prefix and itself), so its keys and
  values are those of its own decoding.

:func:`extend_prefix` appends tokens to a frame's prefix cache instead (the plan line of
``BEVVLM(plan_text=...)``, written after the trajectory queries have been read): the result is the
cache a prefill of the longer prefix would give, on which every question is then answered.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .cache_api import cache_kwargs, output_cache
from .generation import PrefixCache, fork_cache, lm_device
from .packing import additive_mask
from .prompt import block_ids


def forward_train_with_queries(llm, batch: dict, prefix_embeds: Tensor, query_embeds: Tensor) -> dict:
    """Next-token loss on the answers of a packed batch with query slots, and the queries' states.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM`.
        batch: :func:`~bevlm.models.llm.packing.build_packed_batch` output with ``query_slots=K``
            (it holds ``query_index``).
        prefix_embeds: ``[B, P, D]`` embeddings for the prefix slots.
        query_embeds: ``[B, K, D]`` embeddings for the query slots.

    Returns:
        dict ``loss_lm`` (mean over all answer tokens of the batch, as
        :meth:`HFCausalLM.forward_train`), ``hidden_prefix`` ``[B, P, D]`` and ``hidden_queries``
        ``[B, K, D]`` (last-layer states at the prefix and query slots).
    """
    if "query_index" not in batch:
        raise ValueError("forward_train_with_queries: the batch has no query slots; build it with query_slots=K")
    device = lm_device(llm.lm)
    index = batch["query_index"].to(device)  # [B, K]
    if tuple(query_embeds.shape[:2]) != tuple(index.shape):
        raise ValueError(f"query_embeds has shape {tuple(query_embeds.shape)}; the batch has "
                         f"{tuple(index.shape)} query slots")
    input_ids = batch["input_ids"].to(device)
    embeds = llm._splice(input_ids, batch["prefix_slice"], prefix_embeds.to(device))  # [B, L, D]
    rows = torch.arange(embeds.shape[0], device=device)[:, None]  # [B, 1]
    embeds = embeds.index_put((rows, index), query_embeds.to(device=device, dtype=embeds.dtype))
    mask = additive_mask(batch["attention_mask_4d"].to(device), embeds.dtype)  # [B, 1, L, L]
    out = llm.lm.get_decoder()(inputs_embeds=embeds, attention_mask=mask,
                               position_ids=batch["position_ids"].to(device), use_cache=False)
    hidden = out.last_hidden_state  # [B, L, D]
    logits, targets = llm.answer_logits(batch, prefix_embeds, hidden=hidden)
    if targets.numel() == 0:
        raise ValueError("forward_train_with_queries: the batch has no answer tokens to supervise")
    loss = F.cross_entropy(logits.float(), targets)
    start, end = batch["prefix_slice"]
    return dict(loss_lm=loss, hidden_prefix=hidden[:, start:end], hidden_queries=hidden[rows, index])


@torch.no_grad()
def hidden_after_blocks(llm, cache: PrefixCache, blocks: list[tuple[str, str]],
                        query_embeds: Tensor) -> tuple[Tensor, int]:
    """Last-layer states of K query tokens placed after QA blocks, continuing a frame's prefix cache.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` that produced ``cache``.
        cache: the frame's :class:`PrefixCache` (plain, shared-prompt or FastV-pruned; not mutated).
        blocks: ``(question text, answer text)`` the queries read, tokenised as training blocks
            (question + query suffix + answer + end of turn); may be empty.
        query_embeds: ``[1, K, D]``.

    Returns:
        ``(hidden [1, K, D], tokens)``: the queries' states and the number of tokens forwarded
        (block tokens + K).
    """
    if query_embeds.dim() != 3 or query_embeds.shape[0] != 1:
        raise ValueError(f"query_embeds must be [1, K, D] (one frame), got {tuple(query_embeds.shape)}")
    device = lm_device(llm.lm)
    ids = [sum(block_ids(llm.tokenizer, llm.prompt, q, a), []) for q, a in blocks]
    lengths = [len(x) for x in ids]
    n_text, k = sum(lengths), query_embeds.shape[1]
    length = n_text + k
    p = cache.prefix_len                          # position id of the first token after the prefix
    c = cache.past_key_values.get_seq_length()    # cached entries (< p when prefix tokens were pruned)
    flat = torch.tensor([t for x in ids for t in x], dtype=torch.long, device=device)[None]  # [1, n_text]
    text = llm.embed_tokens(flat)  # [1, n_text, D] (n_text may be 0)
    dtype = text.dtype
    embeds = torch.cat([text, query_embeds.to(device=device, dtype=dtype)], dim=1)  # [1, L, D]
    positions = torch.empty((1, length), dtype=torch.long, device=device)
    mask = torch.zeros((length, c + length), dtype=torch.bool, device=device)  # [L, C + L]
    mask[:, :c] = True  # everything sees the prefix
    causal = torch.ones((max(lengths + [k]),) * 2, dtype=torch.bool, device=device).tril()
    start = 0
    for n in lengths:
        positions[0, start:start + n] = torch.arange(p, p + n, device=device)
        mask[start:start + n, c + start:c + start + n] = causal[:n, :n]
        start += n
    first = p + max(lengths, default=0)
    positions[0, n_text:] = torch.arange(first, first + k, device=device)
    mask[n_text:, c:c + n_text] = True  # the queries read every block
    mask[n_text:, c + n_text:] = causal[:k, :k]
    decoder = llm.lm.get_decoder()
    out = decoder(inputs_embeds=embeds, attention_mask=additive_mask(mask[None, None], dtype),
                  position_ids=positions, **cache_kwargs(decoder, fork_cache(cache.past_key_values)),
                  use_cache=True)
    return out.last_hidden_state[:, n_text:], length


def extend_prefix(llm, cache: PrefixCache, ids: list[int]) -> PrefixCache:
    """The frame's prefix cache with ``ids`` appended to the prefix (not mutated: a new cache).

    The tokens see the whole cached prefix (pruned entries stay pruned) and themselves causally, at
    positions ``prefix_len, prefix_len + 1, ...``: what :meth:`HFCausalLM.prefill` of the prefix
    followed by their embeddings computes, without running the prefix again.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` that produced ``cache``.
        cache: the frame's :class:`PrefixCache` (plain, shared-prompt or FastV-pruned).
        ids: token ids to append (at least one).

    Returns:
        A :class:`PrefixCache` whose ``prefix_len``, ``hidden_prefix`` and ``prefix_embeds`` (when
        ``cache`` has them) include the new tokens; ``lookup_ids`` is ``cache``'s.
    """
    if not ids:
        raise ValueError("extend_prefix: no token ids to append")
    device = lm_device(llm.lm)
    n, p = len(ids), cache.prefix_len
    c = cache.past_key_values.get_seq_length()  # cached entries (< p when prefix tokens were pruned)
    embeds = llm.embed_tokens(torch.tensor([ids], dtype=torch.long, device=device))  # [1, n, D]
    mask = torch.ones((n, c + n), dtype=torch.bool, device=device)
    mask[:, c:] = torch.ones((n, n), dtype=torch.bool, device=device).tril()
    positions = torch.arange(p, p + n, device=device)[None]
    decoder = llm.lm.get_decoder()
    out = decoder(inputs_embeds=embeds, attention_mask=additive_mask(mask[None, None], embeds.dtype),
                  position_ids=positions, **cache_kwargs(decoder, fork_cache(cache.past_key_values)),
                  use_cache=True)
    hidden = torch.cat([cache.hidden_prefix, out.last_hidden_state.to(cache.hidden_prefix.dtype)], dim=1)
    prefix_embeds = None
    if cache.prefix_embeds is not None:
        prefix_embeds = torch.cat([cache.prefix_embeds, embeds.detach().to(cache.prefix_embeds)], dim=1)
    return PrefixCache(past_key_values=output_cache(out), prefix_len=p + n, hidden_prefix=hidden,
                       prefix_embeds=prefix_embeds, lookup_ids=cache.lookup_ids)
