"""What differs between causal-LM architectures (model families), in one place.

The wrapper and the decoders are family-agnostic except for the things read here:

* the names of the attention / MLP ``nn.Linear`` layers (LoRA's default ``target_modules``, the
  Linears int4 quantisation selects), see :func:`lora_targets` and :func:`linear_names`;
* where the decoder keeps its layer list, final norm, rotary embedding and input embedding, for
  code that runs the decoder layer by layer (layer-skip drafting), see :func:`decoder_parts`;
* how a layer's self-attention forms its queries and keys (separate or fused projections, per-head
  norms, scaling, logit soft-capping, sliding window), for code that recomputes its attention
  probabilities (FastV token scoring), see :func:`attention_parts`;
* the output transform after the LM head (Gemma-2's final logit soft-capping).

Families covered (transformers ``model_type``): ``llama`` (SmolLM2), ``mistral``, ``qwen2``,
``qwen3``, ``gemma``, ``gemma2``, ``phi3``, ``phi`` (Phi-2) and ``gpt_neox`` (Pythia). An unknown
family falls back to the Llama names. This module does not import ``transformers``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

_LLAMA_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")

#: Default LoRA targets per ``model_type``: the attention projections (the Llama default
#: ``q/k/v/o_proj`` under each family's names).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA_ATTN,
    "mistral": _LLAMA_ATTN,
    "qwen2": _LLAMA_ATTN,
    "qwen3": _LLAMA_ATTN,
    "gemma": _LLAMA_ATTN,
    "gemma2": _LLAMA_ATTN,
    "phi3": ("qkv_proj", "o_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense"),
    "gpt_neox": ("query_key_value", "dense"),
}

#: Every Linear of a decoder layer per ``model_type`` (last name parts), e.g. for the ``include``
#: of quantisation (``bevlm.inference.quantization``: ``include=None``, the default, selects these).
LINEAR_NAMES: dict[str, tuple[str, ...]] = {
    "llama": _LLAMA_ATTN + _LLAMA_MLP,
    "mistral": _LLAMA_ATTN + _LLAMA_MLP,
    "qwen2": _LLAMA_ATTN + _LLAMA_MLP,
    "qwen3": _LLAMA_ATTN + _LLAMA_MLP,
    "gemma": _LLAMA_ATTN + _LLAMA_MLP,
    "gemma2": _LLAMA_ATTN + _LLAMA_MLP,
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}

#: Attribute names of the final norm of a decoder, tried in order.
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f")

#: Attribute names of a decoder layer's self-attention module, tried in order (GPT-NeoX: ``attention``).
ATTENTION_NAMES = ("self_attn", "attention")

#: How the query / key projections of a self-attention module are laid out: attribute names and
#: layout, tried in order. ``'separate'``: ``q_proj`` and ``k_proj`` (Llama, Qwen2/3, Gemma-2, Phi-2);
#: ``'concat'``: one ``qkv_proj`` whose output is ``[q | k | v]`` along the features (Phi-3);
#: ``'per_head'``: one ``query_key_value`` whose output is ``[q k v]`` within each head (GPT-NeoX).
QK_PROJECTIONS = ((("q_proj", "k_proj"), "separate"), (("qkv_proj",), "concat"),
                  (("query_key_value",), "per_head"))


def model_type(lm: nn.Module) -> str:
    """``lm.config.model_type`` ('' when the model has no HF config)."""
    config = getattr(lm, "config", None)
    return str(getattr(config, "model_type", "") or "")


def lora_targets(model_type_name: str) -> list[str]:
    """Default LoRA ``target_modules`` of a family (the Llama names for an unknown one)."""
    return list(LORA_TARGETS.get(model_type_name, _LLAMA_ATTN))


def linear_names(model_type_name: str) -> tuple[str, ...]:
    """Last name parts of every decoder-layer Linear of a family (Llama names for an unknown one)."""
    return LINEAR_NAMES.get(model_type_name, _LLAMA_ATTN + _LLAMA_MLP)


@dataclass
class DecoderParts:
    """The pieces of a ``*ForCausalLM`` that a layer-by-layer forward needs.

    Attributes:
        decoder: ``lm.get_decoder()``.
        embed: input embedding (``lm.get_input_embeddings()``; scaled embeddings such as
            Gemma's scale inside it).
        layers: the decoder layers, in order.
        final_norm: norm applied after the last layer.
        rotary_emb: ``rotary_emb(hidden, position_ids=...) -> (cos, sin)``, or None for a family
            without rotary embeddings (not supported by the layer loop).
        head: the LM head (``lm.get_output_embeddings()``).
        logit_softcap: final logit soft-capping ``c * tanh(logits / c)`` (Gemma-2), or None.
    """

    decoder: nn.Module
    embed: nn.Module
    layers: nn.ModuleList
    final_norm: nn.Module
    rotary_emb: nn.Module | None
    head: nn.Module
    logit_softcap: float | None

    def logits(self, hidden: Tensor) -> Tensor:
        """Logits of last-layer hidden states (before the final norm): norm, head, soft-cap."""
        logits = self.head(self.final_norm(hidden))
        if self.logit_softcap is not None:
            logits = (logits / self.logit_softcap).tanh() * self.logit_softcap
        return logits


@dataclass
class AttentionParts:
    """How one decoder layer's self-attention forms its queries and keys.

    The queries and keys before the rotary embedding are read from the outputs of
    ``projections`` (forward hooks see them whatever the attention implementation); the attention
    logits are then ``scaling * RoPE(q) RoPE(k)^T``, soft-capped, causal and, with a sliding
    window, limited to the last ``sliding_window`` keys of each query.

    Attributes:
        module: the attention module (``layer.self_attn`` / ``layer.attention``).
        projections: the Linears whose outputs hold the queries and keys, in the order the layer
            calls them: ``(q_proj, k_proj)`` or one fused projection.
        layout: ``'separate' | 'concat' | 'per_head'`` (see :data:`QK_PROJECTIONS`).
        num_heads, num_kv_heads, head_dim: query heads, key / value heads (GQA) and head width.
        scaling: factor of ``q k^T`` (``head_dim ** -0.5``; Gemma-2: ``query_pre_attn_scalar ** -0.5``).
        q_norm, k_norm: per-head norms applied to the queries / keys before the rotary embedding
            (Qwen3's ``q_norm``, Phi-2's ``q_layernorm`` with ``qk_layernorm``), or None.
        softcap: attention logit soft-capping ``c * tanh(x / c)`` (Gemma-2), or None.
        sliding_window: each query sees only the keys ``j > i - sliding_window`` (Gemma-2 local
            layers, Mistral, Qwen2 with sliding layers), or None.
    """

    module: nn.Module
    projections: tuple[nn.Module, ...]
    layout: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    q_norm: nn.Module | None
    k_norm: nn.Module | None
    softcap: float | None
    sliding_window: int | None

    def queries_keys(self, outputs: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Queries ``[B, H, T, d]`` and keys ``[B, H_kv, T, d]`` before the rotary embedding.

        Args:
            outputs: the outputs ``[B, T, *]`` of :attr:`projections`, in their order.
        """
        d = self.head_dim
        if self.layout == "separate":
            q, k = outputs
        elif self.layout == "concat":
            qkv = outputs[0]
            nq, nk = self.num_heads * d, self.num_kv_heads * d
            q, k = qkv[..., :nq], qkv[..., nq:nq + nk]
        else:  # per_head: [B, T, H, 3d], q k v side by side within each head
            qkv = outputs[0].reshape(*outputs[0].shape[:2], self.num_heads, 3 * d)
            q, k = qkv[..., :d], qkv[..., d:2 * d]
        b, t = q.shape[:2]
        q, k = q.reshape(b, t, -1, d), k.reshape(b, t, -1, d)  # [B, T, H(_kv), d]
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2)


def attention_parts(lm: nn.Module, layer_index: int) -> AttentionParts:
    """Locate the query / key projections and attention settings of decoder layer ``layer_index``.

    Args:
        lm: a transformers ``*ForCausalLM`` (Llama, Qwen2, Qwen3, Mistral, Gemma, Gemma-2, Phi-3,
            Phi-2, GPT-NeoX).
        layer_index: 0-based index into :attr:`DecoderParts.layers`.

    Returns:
        :class:`AttentionParts`.

    Raises:
        ValueError: the layer has no self-attention module of a known name or no known query / key
            projections.
    """
    layer = decoder_parts(lm).layers[layer_index]
    attn = next((getattr(layer, n) for n in ATTENTION_NAMES if isinstance(getattr(layer, n, None), nn.Module)), None)
    if attn is None:
        raise ValueError(f"{type(layer).__name__} has none of the attention modules {ATTENTION_NAMES}")
    found = next(((names, layout) for names, layout in QK_PROJECTIONS
                  if all(isinstance(getattr(attn, n, None), nn.Module) for n in names)), None)
    if found is None:
        raise ValueError(f"{type(attn).__name__} has none of the query / key projections "
                         f"{[names for names, _ in QK_PROJECTIONS]}")
    names, layout = found
    config = lm.config
    num_heads = int(config.num_attention_heads)
    num_kv_heads = int(getattr(config, "num_key_value_heads", None) or num_heads)
    head_dim = int(getattr(attn, "head_dim", None) or getattr(attn, "head_size", None)
                   or config.hidden_size // num_heads)
    norms = [getattr(attn, n, None) for n in ("q_norm", "k_norm")]
    if norms[0] is None and getattr(attn, "qk_layernorm", False):
        norms = [attn.q_layernorm, attn.k_layernorm]
    softcap = getattr(attn, "attn_logit_softcapping", None)
    # Gemma-2 / Qwen2 / Qwen3 keep a per-layer window (None on full-attention layers); Mistral and
    # Phi-3 read the config's.
    window = attn.sliding_window if hasattr(attn, "sliding_window") else getattr(config, "sliding_window", None)
    return AttentionParts(module=attn, projections=tuple(getattr(attn, n) for n in names), layout=layout,
                          num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
                          scaling=float(getattr(attn, "scaling", head_dim ** -0.5)), q_norm=norms[0],
                          k_norm=norms[1], softcap=float(softcap) if softcap else None,
                          sliding_window=int(window) if window else None)


def decoder_parts(lm: nn.Module) -> DecoderParts:
    """Locate the layer list, final norm, rotary embedding and head of a ``*ForCausalLM``.

    Args:
        lm: a transformers ``*ForCausalLM`` (Llama, Qwen2, Phi-3, Phi-2, GPT-NeoX, Gemma-2, ...).

    Returns:
        :class:`DecoderParts`.

    Raises:
        ValueError: the decoder has no ``layers`` list or no known final norm.
    """
    decoder = lm.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(decoder).__name__} has no 'layers' ModuleList; the layer loop supports decoders "
                         "that keep their layers in .layers (Llama, Qwen2, Phi, Phi-3, GPT-NeoX, Gemma-2)")
    final_norm = next((getattr(decoder, n) for n in FINAL_NORM_NAMES if isinstance(getattr(decoder, n, None),
                                                                                    nn.Module)), None)
    if final_norm is None:
        raise ValueError(f"{type(decoder).__name__} has none of the final norms {FINAL_NORM_NAMES}")
    config = getattr(lm, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    return DecoderParts(decoder=decoder, embed=lm.get_input_embeddings(), layers=layers, final_norm=final_norm,
                        rotary_emb=getattr(decoder, "rotary_emb", None), head=lm.get_output_embeddings(),
                        logit_softcap=float(softcap) if softcap else None)
