"""Layer-skip self-drafting: the model itself, with some decoder layers skipped.

Draft & Verify (Zhang et al., 2023, "Draft & Verify: Lossless Large Language
Model Acceleration via Self-Speculative Decoding", arXiv 2309.08168) and
LayerSkip (Elhoushi et al., 2024, arXiv 2404.16710) draft tokens with a cheaper
sub-network of the model that will verify them: the same embedding, a subset of
the decoder layers, the same final norm and output head. No extra weights, no
training.

This module runs a rotary-embedding ``*ForCausalLM`` decoder layer by layer
(embed -> kept layers -> final norm -> lm_head [-> logit soft-cap]) with rotary position embeddings
and the transformers KV cache: each executed layer appends its keys/values at
the drafted positions, skipped layers append nothing. The cache is therefore
ragged after drafting; :func:`crop_cache` brings every layer back to the
verified length before the full model runs again. Layer 0 is always executed
(the cache's ``get_seq_length`` reads layer 0).

The model's pieces (layer list, final norm, rotary embedding, input embedding, head) are located
per architecture by :func:`bevlm.models.llm.architectures.decoder_parts` (Llama / SmolLM2,
Qwen2, Phi-3, Phi-2 with ``final_layernorm``, GPT-NeoX with ``embed_in`` / ``final_layer_norm``
and a ``layer_past`` cache keyword, Gemma-2 with logit soft-capping), so this file does not
import ``transformers``. Sliding-window layers (Gemma-2, Qwen2 with ``use_sliding_window``) are
supported while the sequence fits in their window (a sliding cache cannot be cropped back
beyond it).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bevlm.models.llm.architectures import decoder_parts
from bevlm.models.llm.cache_api import cache_kwargs
from bevlm.models.llm.generation import lm_device


def crop_cache(past: Any, length: int) -> None:
    """Cut every layer of a KV cache back to its first ``length`` positions, in place.

    Works on ragged caches (layers of different lengths after a layer-skip
    draft); layers already at or below ``length`` are left alone.

    Args:
        past: a transformers ``DynamicCache`` (``.layers`` with
            ``get_seq_length()`` and ``crop(-n)``).
        length: number of positions to keep.
    """
    for layer in past.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


def causal_mask(past_len: int, q_len: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """Additive mask ``[1, 1, q_len, past_len + q_len]`` for ``q_len`` new tokens after a cache.

    Row i (absolute position ``past_len + i``) sees keys ``0 .. past_len + i``.
    Returns None for one new token (it sees everything), which every attention
    backend accepts.
    """
    if q_len == 1:
        return None
    keys = torch.arange(past_len + q_len, device=device)                 # [K]
    rows = past_len + torch.arange(q_len, device=device)                 # [Q]
    blocked = keys[None, :] > rows[:, None]                              # [Q, K]
    mask = torch.zeros(blocked.shape, dtype=dtype, device=device)
    mask.masked_fill_(blocked, torch.finfo(dtype).min)
    return mask[None, None]                                              # [1, 1, Q, K]


def _sliding_window(layer: nn.Module) -> int | None:
    """Sliding window of a decoder layer's attention (None: full attention)."""
    for child in layer.children():
        window = getattr(child, "sliding_window", None)
        if window is not None:
            return int(window)
    return None


class LayerSkipModel:
    """A view of a rotary-embedding causal LM that runs only some decoder layers.

    Args:
        lm: the ``*ForCausalLM`` (e.g. ``HFCausalLM.lm``); its weights are shared,
            nothing is copied.
        skip_layers: indices of decoder layers to skip (0 is not allowed).

    Raises:
        ValueError: a skip index is 0, negative, out of range or repeated, or
            the model's decoder has no layer list / final norm / rotary embedding.
    """

    def __init__(self, lm: nn.Module, skip_layers: list[int]) -> None:
        try:
            parts = decoder_parts(lm)
        except ValueError as err:
            raise ValueError(f"LayerSkipModel: {err}") from err
        if parts.rotary_emb is None:
            raise ValueError(f"LayerSkipModel: the decoder {type(parts.decoder).__name__} has no 'rotary_emb'; "
                             "layer skipping supports rotary-embedding decoders")
        num_layers = len(parts.layers)
        skip = sorted(set(int(i) for i in skip_layers))
        if len(skip) != len(list(skip_layers)):
            raise ValueError(f"LayerSkipModel: skip_layers={list(skip_layers)} repeats an index")
        bad = [i for i in skip if not 0 < i < num_layers]
        if bad:
            raise ValueError(f"LayerSkipModel: skip_layers {bad} out of range; valid indices are 1..{num_layers - 1} "
                             "(layer 0 is always executed: the cache length is read from it)")
        self.lm = lm
        self.parts = parts
        self.decoder = parts.decoder
        self.head = parts.head
        self.num_layers = num_layers
        self.skip_layers = skip
        self.kept_layers = [i for i in range(num_layers) if i not in set(skip)]
        windows = [_sliding_window(parts.layers[i]) for i in self.kept_layers]
        self.min_window = min((w for w in windows if w is not None), default=None)

    def cost_ratio(self) -> float:
        """Parameter bytes read per draft token / per full-model token.

        Batch-1 decoding is bound by memory bandwidth, so the weights read per
        token is the cost model: kept decoder layers + final norm + output head
        over all layers + norm + head (the embedding lookup reads one row and
        is not counted).
        """
        layer_numel = [sum(p.numel() for p in layer.parameters()) for layer in self.parts.layers]
        rest = sum(p.numel() for p in self.parts.final_norm.parameters())
        rest += sum(p.numel() for p in self.head.parameters())
        kept = sum(layer_numel[i] for i in self.kept_layers)
        return (kept + rest) / (sum(layer_numel) + rest)

    @torch.no_grad()
    def logits(self, input_ids: Tensor, past: Any, start_pos: int) -> Tensor:
        """Run the kept layers on new tokens that follow the cached positions.

        Args:
            input_ids: ``[1, L]`` new token ids at position ids ``start_pos .. start_pos + L - 1``.
            past: KV cache whose kept layers hold the same number of entries as
                layer 0 (``past.get_seq_length()``); the kept layers get the L
                new entries appended. Position ids may run ahead of the entry
                count (a pruned prefix cache keeps fewer entries than positions).
            start_pos: position id of the first new token.

        Returns:
            logits ``[1, L, V]`` (soft-capped where the model soft-caps them).

        Raises:
            ValueError: a kept sliding-window layer would see more than its window.
        """
        device = input_ids.device
        q_len = input_ids.shape[1]
        kv_len = past.get_seq_length()
        if self.min_window is not None and kv_len + q_len > self.min_window:
            raise ValueError(f"LayerSkipModel: {kv_len + q_len} positions exceed the sliding window "
                             f"{self.min_window} of a kept layer; layer-skip drafting (and cache cropping) "
                             "supports sliding-window layers only inside their window")
        hidden = self.parts.embed(input_ids)                                         # [1, L, D]
        positions = torch.arange(start_pos, start_pos + q_len, device=device)[None]  # [1, L]
        rope = self.parts.rotary_emb(hidden, position_ids=positions)                 # (cos, sin) [1, L, Dh]
        mask = causal_mask(kv_len, q_len, hidden.dtype, device)
        for i in self.kept_layers:
            layer = self.parts.layers[i]
            out = layer(hidden, attention_mask=mask, position_ids=positions,
                        **cache_kwargs(layer, past), use_cache=True, position_embeddings=rope)
            hidden = out[0] if isinstance(out, tuple) else out                        # [1, L, D]
        return self.parts.logits(hidden)                                             # [1, L, V]

    @torch.no_grad()
    def draft(self, token: int, past: Any, start_pos: int, num_tokens: int,
              stop_ids: frozenset[int]) -> list[int]:
        """Greedily draft up to ``num_tokens`` tokens after ``token``.

        Args:
            token: the last accepted token, at position id ``start_pos`` (not cached).
            past: KV cache with the same entry count in every layer (the verified
                tokens); on return it is cropped back to that count (content unchanged).
            start_pos: position id of ``token``.
            num_tokens: draft length (>= 1).
            stop_ids: drafting ends after a stop token is drafted.

        Returns:
            the drafted ids (1 .. ``num_tokens``), a stop id only as the last one.
        """
        device = lm_device(self.lm)
        kv_len = past.get_seq_length()
        drafted: list[int] = []
        current = token
        for step in range(num_tokens):
            ids = torch.tensor([[current]], dtype=torch.long, device=device)  # [1, 1]
            current = int(self.logits(ids, past, start_pos + step)[0, -1].argmax())
            drafted.append(current)
            if current in stop_ids:
                break
        crop_cache(past, kv_len)
        return drafted
