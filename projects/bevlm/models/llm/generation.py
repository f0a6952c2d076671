"""Greedy generation with a per-frame prefix KV cache.

The prefix (system prompt + visual/ego/trajectory-query embeddings) is
prefilled ONCE per key frame; every question of the frame then continues from
a private copy of that cache, so the prefix cost is paid once per frame instead
of once per question (the "prompt cache" of e.g. Gim et al., 2024, "Prompt
Cache: Modular Attention Reuse for Low-Latency Inference"). A reference decoder
that recomputes everything at every step checks the cached one in tests.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .cache_api import cache_kwargs, output_cache
from .stopping import AnswerGuard, RepetitionStop


@dataclass
class PrefixCache:
    """KV cache of one frame's prefix, reusable by every question of the frame.

    Attributes:
        past_key_values: transformers cache (``DynamicCache``) holding keys
            and values of the ``prefix_len`` prefix positions; never mutated
            by :func:`greedy_from_cache`.
        prefix_len: position id of the first token after the prefix, ``T0 + P`` (prefix
            text + the caller's prefix embeddings); equals the number of cached entries unless
            prefix tokens were pruned (see :mod:`bevlm.models.pruning`).
        hidden_prefix: ``[1, P, D]`` last-layer hidden states at the caller's
            P prefix positions (the trajectory head reads the last K).
        prefix_embeds: ``[1, P, D]`` the caller's prefix embeddings that were prefilled after the
            prompt text (visual / ego / trajectory-query tokens), kept so that a second model (a
            quantised draft of speculative decoding) can prefill the same prefix; None for a cache
            built by hand. Keyword-only.
        lookup_ids: token ids of text the prefix holds as embeddings (the detections line of
            ``perception_text``), which speculative decoding's prompt lookup may copy drafts from;
            never fed to the model again, so they cannot change an answer. None: none. Keyword-only.
    """

    past_key_values: Any
    prefix_len: int
    hidden_prefix: torch.Tensor
    prefix_embeds: torch.Tensor | None = field(default=None, kw_only=True)
    lookup_ids: list[int] | None = field(default=None, kw_only=True)


def lm_device(lm: nn.Module) -> torch.device:
    """Device of the LM's input embeddings (a float ``weight``, or the buffers of a quantised table)."""
    embed = lm.get_input_embeddings()
    for t in embed.parameters():
        return t.device
    for t in embed.buffers():
        return t.device
    raise ValueError(f"{type(embed).__name__}: the input embeddings hold no tensors")


def fork_cache(past_key_values: Any) -> Any:
    """A private copy of a cache; decoding into it leaves the original intact."""
    return copy.deepcopy(past_key_values)


@torch.no_grad()
def prefill(lm: nn.Module, inputs_embeds: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Run the prefix once and keep its KV cache.

    Args:
        lm: a ``*ForCausalLM`` (its ``get_decoder()`` is called).
        inputs_embeds: ``[1, T, D]`` embeddings of the whole prefix.

    Returns:
        ``(past_key_values, hidden)``, ``hidden`` ``[1, T, D]`` last layer.
    """
    from transformers import DynamicCache

    past = DynamicCache(config=lm.config)
    decoder = lm.get_decoder()
    out = decoder(inputs_embeds=inputs_embeds, **cache_kwargs(decoder, past), use_cache=True)
    return output_cache(out), out.last_hidden_state


def choose_token(logits: torch.Tensor, stop_ids: frozenset[int], guard: AnswerGuard | None = None,
                 ids: list[int] | None = None, token: int | None = None) -> int:
    """Greedy choice from ``[V]`` logits under an answer's end guard.

    Args:
        logits: ``[V]`` next-token logits (not modified).
        stop_ids: ids that end an answer.
        guard: the answer's :class:`~bevlm.models.llm.stopping.AnswerGuard` (None: plain argmax).
        ids: the answer so far (needed with a guard).
        token: the argmax of ``logits`` when the caller has it already.

    Returns:
        the argmax, or where the guard forbids it the best token it allows (all stop tokens are
        passed over together; a forbidden non-stop token alone).
    """
    token = int(logits.argmax()) if token is None else token
    if guard is None or not guard.forbids(ids, token, stop_ids):
        return token
    masked = logits.clone()
    while guard.forbids(ids, token, stop_ids):
        if masked[token] == float("-inf"):  # nothing left that the guard allows
            break
        masked[list(stop_ids) if token in stop_ids else token] = float("-inf")
        token = int(masked.argmax())
    return token


def guarded_choices(logits: torch.Tensor, greedy: list[int], stop_ids: frozenset[int],
                    guard: AnswerGuard, answer: list[int], drafts: list[int]) -> list[int]:
    """The greedy choices of one speculative verify forward under an end guard.

    Args:
        logits: ``[W, V]``: row 0 is the choice after the pending token, row ``j`` the choice after
            draft ``j`` (rows past ``len(drafts)`` are padding, left as they are).
        greedy: the argmax of each row.
        stop_ids: ids that end an answer.
        guard: the answer's :class:`~bevlm.models.llm.stopping.AnswerGuard`.
        answer: the answer so far, the pending token included.
        drafts: the drafts fed after the pending token.

    Returns:
        ``greedy`` with each choice that the guard forbids (for the answer ``answer + drafts[:j]``)
        replaced by :func:`choose_token`'s choice, as plain decoding would take it.
    """
    out = list(greedy)
    for j in range(min(len(greedy), len(drafts) + 1)):
        out[j] = choose_token(logits[j], stop_ids, guard, answer + drafts[:j], token=out[j])
    return out


@torch.no_grad()
def greedy_from_cache(lm: nn.Module, cache: PrefixCache, query_ids: list[int], max_new_tokens: int,
                      stop_ids: frozenset[int], stop_rule: RepetitionStop | None = None,
                      end_check: AnswerGuard | None = None) -> list[int]:
    """Greedy decoding that continues from a prefix cache.

    Args:
        lm: the ``*ForCausalLM`` that produced ``cache``.
        cache: :class:`PrefixCache` of the frame (copied, not mutated).
        query_ids: ids of ``question + query_suffix``.
        max_new_tokens: at most this many tokens are returned.
        stop_ids: ids that end the answer (not returned).
        stop_rule: optional loop stop rule, checked after every token.
        end_check: optional :class:`~bevlm.models.llm.stopping.AnswerGuard` of the answer: a token
            it forbids for the answer so far (a stop token before the required text) is passed over.

    Returns:
        generated token ids, without the stop token.
    """
    device = lm_device(lm)
    past = fork_cache(cache.past_key_values)
    pos = cache.prefix_len
    inputs = torch.tensor([query_ids], dtype=torch.long, device=device)  # [1, Lq]
    generated: list[int] = []
    while len(generated) < max_new_tokens:
        positions = torch.arange(pos, pos + inputs.shape[1], device=device)[None]  # [1, Lq]
        out = lm(input_ids=inputs, position_ids=positions, **cache_kwargs(lm, past), use_cache=True,
                 logits_to_keep=1)
        past, pos = output_cache(out), pos + inputs.shape[1]
        token = choose_token(out.logits[0, -1], stop_ids, end_check, generated)
        if token in stop_ids:
            break
        generated.append(token)
        if stop_rule is not None and (cut := stop_rule.truncate_to(generated)) is not None:
            return generated[:cut]
        inputs = torch.tensor([[token]], dtype=torch.long, device=device)  # [1, 1]
    return generated


@torch.no_grad()
def greedy_no_cache(lm: nn.Module, prefix_embeds: torch.Tensor, query_ids: list[int], max_new_tokens: int,
                    stop_ids: frozenset[int], stop_rule: RepetitionStop | None = None,
                    end_check: AnswerGuard | None = None) -> list[int]:
    """Reference greedy decoding: the whole sequence is recomputed every step.

    Args:
        lm: a ``*ForCausalLM``.
        prefix_embeds: ``[1, T, D]`` embeddings of the whole prefix.
        query_ids: ids of ``question + query_suffix``.
        max_new_tokens: at most this many tokens are returned.
        stop_ids: ids that end the answer (not returned).
        stop_rule: optional loop stop rule, checked after every token.
        end_check: optional :class:`~bevlm.models.llm.stopping.AnswerGuard` of the answer: a token
            it forbids for the answer so far (a stop token before the required text) is passed over.

    Returns:
        generated token ids, without the stop token.
    """
    embed = lm.get_input_embeddings()
    device = lm_device(lm)
    generated: list[int] = []
    while len(generated) < max_new_tokens:
        ids = torch.tensor([query_ids + generated], dtype=torch.long, device=device)  # [1, Lq + n]
        inputs_embeds = torch.cat([prefix_embeds, embed(ids)], dim=1)  # [1, T + Lq + n, D]
        out = lm(inputs_embeds=inputs_embeds, use_cache=False, logits_to_keep=1)
        token = choose_token(out.logits[0, -1], stop_ids, end_check, generated)
        if token in stop_ids:
            break
        generated.append(token)
        if stop_rule is not None and (cut := stop_rule.truncate_to(generated)) is not None:
            return generated[:cut]
    return generated
