"""What differs between causal-LM architectures (model families), in one place.

The wrapper and the decoders are family-agnostic except for three things read here:

* the names of the attention / MLP ``nn.Linear`` layers (LoRA's default ``target_modules``, the
  Linears int4 quantisation selects), see :func:`lora_targets` and :func:`linear_names`;
* where the decoder keeps its layer list, final norm, rotary embedding and input embedding, for
  code that runs the decoder layer by layer (layer-skip drafting), see :func:`decoder_parts`;
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
#: of int4 quantisation (``bevlm.inference.quantization``, whose default is the Llama list).
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
