"""FastV-style visual-token pruning of the frame prefix during prefill.

FastV (Chen et al., 2024, "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference
Acceleration for Large Vision-Language Models", arXiv 2403.06764) observes that after the first
few decoder layers most visual tokens receive almost no attention, ranks them by the attention
they receive at layer K and drops the lowest ranked ones.

Prefix layout of the LLM wrapper (:class:`bevlm.models.llm.HFCausalLM`)::

    [prompt text T0] [visual N] [ego 0/1] [K_traj trajectory queries]      (T = T0 + P tokens)

Scheme used here (two passes, one KV cache of a single consistent length):

1. **Scoring pass.** Run decoder layers ``0 .. K-2`` on all T tokens and, in layer ``K-1`` (the
   K-th layer, FastV's "layer K"), only its input norm and its query/key projections; the
   pass stops right after the key projection. The attention probabilities of that layer
   (causal softmax of ``RoPE(q) RoPE(k)^T / sqrt(d_head)``, eager, fp32) are recomputed for the
   R rows *after* the visual slice (ego + trajectory queries); a visual token's score is its
   attention from those rows, averaged over the rows and the heads.
2. **Kept prefill.** The ``round(keep_ratio * N)`` (>= 1) best visual tokens, the prompt text
   and every non-visual prefix token (ego and trajectory queries are never pruned) are
   prefilled from scratch through all L layers with their ORIGINAL position ids, so RoPE sees the
   unpruned layout and the first question token takes position T.

FLOP cost (linear layers + attention; ``C_l(n)`` = one decoder layer on n tokens):
``(K-1) * C_l(T) + [norm + q/k projections of one layer on T tokens] + H * R * T * d_head * 2
(scores) + L * C_l(T0 + N_keep + P - N)``. The q/k projections are ~1/8 of a layer for
SmolLM2-135M (GQA 9/3 heads, MLP 1536) and ~1/6 for the tiny test Llama, so against the unpruned
``L * C_l(T)`` the overhead is ``(K-1)/L + ~1/(8L)`` of a full prefill (SmolLM2-135M, L=30, K=2:
~3.8%). Decoding every question then reads a KV cache that is ``N - N_keep`` entries shorter.

``keep_ratio`` that keeps every visual token runs exactly :meth:`HFCausalLM.prefill` (no scoring
pass): identical cache and answers.

Architectures: the scoring layer's attention is located through
:func:`bevlm.models.llm.architectures.attention_parts` (``self_attn`` or GPT-NeoX's ``attention``;
separate ``q_proj`` / ``k_proj`` or fused ``qkv_proj`` (Phi-3) / ``query_key_value`` (GPT-NeoX);
per-head query / key norms; partial rotary embeddings (Phi-2, GPT-NeoX: the rotary part is the
width of the rotary embedding's ``cos``); Gemma-2's ``query_pre_attn_scalar`` scaling, attention
logit soft-capping and sliding window), so the scores are those of the model's own attention on
every family of :mod:`bevlm.models.llm.architectures`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.models.llm.architectures import attention_parts, decoder_parts
from bevlm.models.llm.cache_api import output_cache
from bevlm.models.llm.generation import lm_device

from .selection import num_kept, top_indices


@dataclass
class PrunedPrefixCache(PrefixCache):
    """A :class:`PrefixCache` whose KV cache holds only the kept prefix positions.

    ``prefix_len`` keeps its decoding role: the position id of the first token after the
    prefix, i.e. ``T0 + P`` of the UNPRUNED layout (``greedy_from_cache`` starts the question
    there). The cache itself holds ``cached_len = T0 + len(kept_index)`` entries; batched
    decoding must size its attention mask by ``cached_len``, not ``prefix_len``.

    Attributes:
        kept_index: ``[P']`` sorted indices (into the P prefix embeddings) of the kept positions.
        visual_scores: ``[N]`` FastV score of every visual token (None when nothing was pruned).
        hidden_prefix: ``[1, P', D]`` last-layer states of the kept prefix positions, in order;
            the trajectory queries are last, so ``hidden_prefix[:, -K_traj:]`` still holds them.
    """

    kept_index: Tensor
    visual_scores: Tensor | None

    @property
    def cached_len(self) -> int:
        """Number of KV entries in ``past_key_values`` (``T0 + P'``)."""
        return int(self.past_key_values.get_seq_length())


class _StopAfterKeys(Exception):
    """Raised by the hook of the last query / key projection to end the scoring pass early."""


def _check_slice(visual_slice: tuple[int, int], num_prefix: int) -> tuple[int, int]:
    start, end = (int(v) for v in visual_slice)
    if not 0 <= start < end <= num_prefix:
        raise ValueError(f"fastv: visual_slice={visual_slice} must satisfy 0 <= start < end <= P={num_prefix} "
                         "(indices into prefix_embeds, e.g. (0, N_vis) for BEVVLM)")
    if end == num_prefix:
        raise ValueError(f"fastv: visual_slice={visual_slice} ends the prefix (P={num_prefix}); scores come from "
                         "the prefix tokens after the visual tokens (ego / trajectory queries). Enable "
                         "use_ego_status or a traj_head, or use BEV-side pruning instead.")
    return start, end


def _check_layer(llm: HFCausalLM, layer: int) -> int:
    if not 1 <= int(layer) <= llm.num_layers:
        raise ValueError(f"fastv: layer={layer} must be in [1, {llm.num_layers}] (1-based: the attention map of "
                         f"decoder layer index layer-1 ranks the visual tokens)")
    return int(layer)


def prefix_text_embeds(llm: HFCausalLM) -> Tensor:
    """``[1, T0, D]`` embeddings of the prompt text that precedes the prefix embeddings."""
    ids = torch.tensor([llm.prompt.prefix_ids], dtype=torch.long, device=lm_device(llm.lm))  # [1, T0]
    return llm.embed_tokens(ids)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of ``x [1, H, T, d]`` on its first ``cos.shape[-1]`` channels (all of them,
    or the rotary part of a partial-rotary family); ``cos`` / ``sin`` ``[1, 1, T, d_rot]``."""
    rot = cos.shape[-1]
    rotated = x[..., :rot] * cos + _rotate_half(x[..., :rot]) * sin
    return torch.cat([rotated, x[..., rot:]], dim=-1) if rot < x.shape[-1] else rotated


@torch.no_grad()
def fastv_scores(llm: HFCausalLM, prefix_embeds: Tensor, visual_slice: tuple[int, int],
                 layer: int = 2) -> Tensor:
    """Attention received by each visual token at decoder layer ``layer`` (1-based).

    Args:
        llm: the LLM wrapper (plain or LoRA; any attention implementation; any architecture of
            :func:`bevlm.models.llm.architectures.attention_parts`).
        prefix_embeds: ``[1, P, D]`` prefix embeddings (visual, ego, trajectory queries).
        visual_slice: ``(start, end)`` of the visual tokens inside ``prefix_embeds``.
        layer: FastV's K; the attention probabilities of decoder layer index ``layer - 1``.

    Returns:
        ``[N]`` float32 scores, ``N = end - start``: attention from every prefix row after the
        visual slice, averaged over those rows and over the heads.
    """
    layer = _check_layer(llm, layer)
    start, end = _check_slice(visual_slice, prefix_embeds.shape[1])
    text = prefix_text_embeds(llm)
    inputs = torch.cat([text, prefix_embeds.to(device=text.device, dtype=text.dtype)], dim=1)  # [1, T, D]
    t0, total = text.shape[1], inputs.shape[1]
    parts = decoder_parts(llm.lm)
    attn = attention_parts(llm.lm, layer - 1)
    if parts.rotary_emb is None:
        raise ValueError(f"fastv_scores: {type(parts.decoder).__name__} has no rotary embedding (rotary_emb); "
                         "FastV scoring supports rotary-position families")
    captured: list[Tensor] = []

    def on_projection(module, args, output):
        captured.append(output)
        if len(captured) == len(attn.projections):
            raise _StopAfterKeys

    hooks = [proj.register_forward_hook(on_projection) for proj in attn.projections]
    try:
        parts.decoder(inputs_embeds=inputs, use_cache=False)
    except _StopAfterKeys:
        pass
    finally:
        for h in hooks:
            h.remove()
    if len(captured) != len(attn.projections):
        raise RuntimeError("fastv_scores: the query/key projections of the scoring layer were not observed; "
                           "the decoder layer must call them in the order of attention_parts(...).projections")
    q, k = attn.queries_keys(captured)  # [1, H, T, d], [1, H_kv, T, d] (per-head norms in the model dtype)
    q, k = q.float(), k.float()
    positions = torch.arange(total, device=inputs.device)[None]  # [1, T]
    cos, sin = parts.rotary_emb(inputs, positions)  # [1, T, d_rot] each
    cos, sin = cos.float()[:, None], sin.float()[:, None]  # [1, 1, T, d_rot]
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # [1, H, T, d] (GQA)
    rows = torch.arange(t0 + end, total, device=inputs.device)  # prefix rows after the visual slice
    logits = q[:, :, rows] @ k.transpose(-1, -2) * attn.scaling  # [1, H, R, T]
    if attn.softcap is not None:
        logits = torch.tanh(logits / attn.softcap) * attn.softcap
    cols = torch.arange(total, device=inputs.device)[None, :]
    hidden = cols > rows[:, None]  # [R, T] causal
    if attn.sliding_window is not None:
        hidden = hidden | (cols <= rows[:, None] - attn.sliding_window)
    probs = logits.masked_fill(hidden, float("-inf")).softmax(dim=-1)  # [1, H, R, T]
    return probs[0, :, :, t0 + start:t0 + end].mean(dim=(0, 1))  # [N]


@torch.no_grad()
def prefill_kept(llm: HFCausalLM, prefix_embeds: Tensor, kept_index: Tensor) -> tuple[object, Tensor]:
    """Prefill the prompt text and the kept prefix positions with their original position ids.

    Args:
        llm: the LLM wrapper.
        prefix_embeds: ``[1, P, D]``.
        kept_index: ``[P']`` sorted indices into the P prefix positions.

    Returns:
        ``(past_key_values, hidden_prefix)``: a cache of ``T0 + P'`` entries and the
        ``[1, P', D]`` last-layer states of the kept prefix positions.
    """
    text = prefix_text_embeds(llm)
    t0 = text.shape[1]
    kept_index = kept_index.to(text.device)
    kept = prefix_embeds.to(device=text.device, dtype=text.dtype)[:, kept_index]  # [1, P', D]
    inputs = torch.cat([text, kept], dim=1)  # [1, T0 + P', D]
    positions = torch.cat([torch.arange(t0, device=text.device), t0 + kept_index])[None]  # [1, T0 + P']
    # use_cache=True: the decoder allocates the cache before building the mask, so the gaps in
    # position_ids are not mistaken for packed sequences; the mask is causal over the kept order.
    out = llm.lm.get_decoder()(inputs_embeds=inputs, position_ids=positions, use_cache=True)
    return output_cache(out), out.last_hidden_state[:, t0:]


@torch.no_grad()
def fastv_prefill(llm: HFCausalLM, prefix_embeds: Tensor, visual_slice: tuple[int, int],
                  keep_ratio: float, layer: int = 2) -> PrunedPrefixCache:
    """Prefill the frame prefix keeping only the visual tokens FastV ranks highest.

    Args:
        llm: the LLM wrapper.
        prefix_embeds: ``[1, P, D]`` = [visual N][ego][trajectory queries].
        visual_slice: ``(start, end)`` of the visual tokens in ``prefix_embeds``.
        keep_ratio: fraction of visual tokens kept, in (0, 1]; ``round(keep_ratio * N)``
            tokens, at least 1.
        layer: FastV's K (1-based decoder layer whose attention ranks the tokens).

    Returns:
        :class:`PrunedPrefixCache`; decode with ``llm.generate_ids(cache, question)``. When every
        visual token is kept this is exactly ``llm.prefill(prefix_embeds)`` (no scoring pass).
    """
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
        raise ValueError(f"fastv_prefill: prefix_embeds must be [1, P, D] (one frame), got "
                         f"{tuple(prefix_embeds.shape)}")
    num_prefix = prefix_embeds.shape[1]
    start, end = _check_slice(visual_slice, num_prefix)
    _check_layer(llm, layer)
    n_vis = end - start
    n_keep = num_kept(n_vis, keep_ratio)
    if n_keep == n_vis:
        cache = llm.prefill(prefix_embeds)
        return PrunedPrefixCache(past_key_values=cache.past_key_values, prefix_len=cache.prefix_len,
                                 hidden_prefix=cache.hidden_prefix, kept_index=torch.arange(num_prefix),
                                 visual_scores=None, prefix_embeds=cache.prefix_embeds)
    scores = fastv_scores(llm, prefix_embeds, (start, end), layer)  # [N]
    keep_vis = start + top_indices(scores[None], n_keep)[0].cpu()  # [N_keep] sorted
    kept_index = torch.cat([torch.arange(start), keep_vis, torch.arange(end, num_prefix)])  # [P']
    past, hidden = prefill_kept(llm, prefix_embeds, kept_index)
    return PrunedPrefixCache(past_key_values=past, prefix_len=llm.prefix_text_len + num_prefix,
                             hidden_prefix=hidden, kept_index=kept_index, visual_scores=scores.cpu(),
                             prefix_embeds=prefix_embeds.detach())
