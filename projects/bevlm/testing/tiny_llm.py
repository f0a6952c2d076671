"""A tiny tokenizer and Llama config for fast, offline, deterministic tests.

``tiny_tokenizer()`` trains a byte-level BPE (the GPT-2 / SmolLM2 scheme) on a
small in-process corpus of DriveLM-like text, so nothing is downloaded. The
chat template and special tokens copy SmolLM2-Instruct's ChatML layout, so the
prompt code paths exercised by tests are the ones used by the real model.

The wrapping into a ``transformers`` tokenizer happens in
:mod:`bevlm.models.llm.loading`. Importing this module registers :func:`build_tiny_llama` and
:func:`build_tiny_causal_lm` in ``bevlm.registry.FUNCTIONS``, so an LLM config can name them
(``llm=dict(type='HFCausalLM', builder=dict(type='build_tiny_llama', config=...))`` or the
``tiny_config`` shorthand); the production package never imports this module.

Other architectures than Llama: :data:`TINY_ARCH_CONFIGS` holds a tiny config per
``model_type`` (Qwen2, Phi-3, Phi-2, GPT-NeoX, Gemma-2, plus Llama), all over the same tiny
tokenizer; ``HFCausalLM(tiny_config=TINY_ARCH_CONFIGS['phi'])`` builds a random Phi-2.
"""
from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

from bevlm.models.llm.loading import fast_tokenizer_from_json
from bevlm.registry import FUNCTIONS

#: Size of the tiny vocabulary; ``TINY_LLAMA_CONFIG['vocab_size']`` equals it.
TINY_VOCAB_SIZE = 600

#: Special tokens, in id order (ids 0..3).
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")

#: SmolLM2-Instruct's ChatML template (default system prompt shortened).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

#: A 2-layer Llama of the same family as SmolLM2 (GQA, tied embeddings).
TINY_LLAMA_CONFIG = dict(
    vocab_size=TINY_VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=3,
)

_SPECIAL_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3)
_TINY_SIZES = dict(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=512, **_SPECIAL_IDS)

#: A tiny random config per transformers ``model_type`` (the key ``model_type`` picks the
#: architecture in :func:`build_tiny_causal_lm`); every one uses the tiny tokenizer's vocabulary and
#: special ids. Gemma-2 keeps its logit soft-capping and alternating sliding-window layers (window
#: 512, longer than any test sequence) and only runs with ``attn_implementation='eager'``.
TINY_ARCH_CONFIGS: dict[str, dict] = {
    "llama": dict(TINY_LLAMA_CONFIG, model_type="llama"),
    "qwen2": dict(_TINY_SIZES, model_type="qwen2", num_key_value_heads=2, rms_norm_eps=1e-6,
                  tie_word_embeddings=True),
    "phi3": dict(_TINY_SIZES, model_type="phi3", num_key_value_heads=2, rms_norm_eps=1e-5),
    "phi": dict(_TINY_SIZES, model_type="phi", num_key_value_heads=4, partial_rotary_factor=0.5),
    "gpt_neox": dict(_TINY_SIZES, model_type="gpt_neox", rotary_pct=0.25, use_parallel_residual=True),
    "gemma2": dict(_TINY_SIZES, model_type="gemma2", num_key_value_heads=2, head_dim=16, sliding_window=512,
                   query_pre_attn_scalar=16),
}

_QUESTIONS = (
    "What are the important objects in the current scene?",
    "What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?",
    "What is the future state of <c2,CAM_BACK,1088.3,497.5>?",
    "What actions could the ego vehicle take based on <c3,CAM_FRONT_LEFT,400.8,555.0>?",
    "In this scenario, what are safe actions to take for the ego vehicle?",
    "Predict the behavior of the ego vehicle.",
    "Is <c1,CAM_FRONT_RIGHT,1300.0,600.2> a traffic sign or a road barrier?",
    "Would <c4,CAM_BACK_LEFT,64.0,480.5> be in the moving direction of the ego vehicle?",
    "What object should the ego vehicle notice first when the ego vehicle is getting to the next possible location?",
    "What is the priority of the objects that the ego vehicle should consider?",
)
_ANSWERS = (
    "There is a white sedan to the front of the ego vehicle, a pedestrian to the back left, "
    "and a traffic cone to the front right.",
    "Going ahead.", "Turn left.", "Turn right.", "Stationary.", "Yes.", "No.",
    "The ego vehicle is going straight. The ego vehicle is driving fast.",
    "The ego vehicle is slightly steering to the left. The ego vehicle is driving with normal speed.",
    "Keep going at the same speed, decelerate gradually without braking, brake suddenly.",
    "Firstly notice <c1,CAM_FRONT,712.5,510.0>. The object is a traffic sign, so the ego vehicle should "
    "slow down and proceed.",
    "The trajectory is [(0.00,0.00), (2.41,0.03), (4.87,0.11), (7.30,-0.25), (9.68,-0.42), (12.05,-0.91)].",
)
_DIGITS = " ".join(f"{i} {i / 7:.2f} -{i * 3.5:.1f}" for i in range(60))


def _corpus() -> list[str]:
    """Deterministic DriveLM-like training text for the tiny BPE."""
    lines = list(_QUESTIONS) + list(_ANSWERS) + [_DIGITS]
    for cam in ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                "CAM_BACK_RIGHT"):
        lines.append(" ".join(f"<c{i},{cam},{100 + 37 * i}.{i},{300 + 11 * i}.5>" for i in range(1, 9)))
    lines.append("You are a driving assistant. Answer about the scene seen in the BEV tokens.")
    lines.append("User: Assistant: System: system user assistant")
    return lines * 3


@functools.lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    """Train the byte-level BPE once per process; return its JSON serialisation."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if tok.get_vocab_size() > TINY_VOCAB_SIZE:
        raise RuntimeError(f"tiny BPE grew to {tok.get_vocab_size()} > {TINY_VOCAB_SIZE} tokens")
    for expected_id, token in enumerate(TINY_SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise RuntimeError(f"special token {token!r} did not get id {expected_id}")
    return tok.to_str()


def tiny_tokenizer():
    """A fresh ``PreTrainedTokenizerFast`` over the tiny byte-level BPE.

    Training runs once per process (cached); each call returns a new wrapper,
    so tests may change attributes without leaking into each other.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` with unk ``<|endoftext|>``
        (id 0), bos ``<|im_start|>`` (id 1), eos ``<|im_end|>`` (id 2), pad
        ``<|pad|>`` (id 3), as in SmolLM2-Instruct, and a ChatML template.
    """
    return fast_tokenizer_from_json(
        _trained_tokenizer_json(),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        chat_template=TINY_CHAT_TEMPLATE)


@FUNCTIONS.register_module()
def build_tiny_llama(config: dict, torch_dtype: torch.dtype = torch.float32,
                     attn_implementation: str = "sdpa") -> tuple[nn.Module, object]:
    """A randomly initialised ``LlamaForCausalLM`` plus the tiny test tokenizer.

    Args:
        config: ``LlamaConfig`` keyword arguments (e.g. :data:`TINY_LLAMA_CONFIG`).
        torch_dtype: parameter dtype.
        attn_implementation: ``'sdpa'`` or ``'eager'``.

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ValueError: the config's vocabulary is smaller than the tokenizer's.
    """
    from transformers import LlamaConfig, LlamaForCausalLM  # heavy optional dependency, loaded on use

    tokenizer = tiny_tokenizer()
    llama_config = LlamaConfig(**config)
    if llama_config.vocab_size < len(tokenizer):
        raise ValueError(f"tiny_config['vocab_size']={llama_config.vocab_size} < {len(tokenizer)} tokens of the "
                         "tiny tokenizer; fix the 'vocab_size' key of tiny_config")
    llama_config._attn_implementation = attn_implementation
    model = LlamaForCausalLM(llama_config)
    return model.to(torch_dtype), tokenizer


@FUNCTIONS.register_module()
def build_tiny_causal_lm(config: dict, torch_dtype: torch.dtype = torch.float32,
                         attn_implementation: str = "sdpa") -> tuple[nn.Module, object]:
    """A randomly initialised ``*ForCausalLM`` of any architecture plus the tiny test tokenizer.

    Args:
        config: ``model_type`` (default ``'llama'``) and that architecture's config keyword
            arguments (e.g. an entry of :data:`TINY_ARCH_CONFIGS`), for
            ``transformers.AutoConfig.for_model``.
        torch_dtype: parameter dtype.
        attn_implementation: ``'sdpa'`` or ``'eager'``; ``'sdpa'`` falls back to ``'eager'`` for an
            architecture without an SDPA attention (Gemma-2: soft-capped attention logits).

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ValueError: the config's vocabulary is smaller than the tokenizer's.
    """
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy optional dependency, loaded on use

    kwargs = dict(config)
    model_type = kwargs.pop("model_type", "llama")
    tokenizer = tiny_tokenizer()
    hf_config = AutoConfig.for_model(model_type, **kwargs)
    if hf_config.vocab_size < len(tokenizer):
        raise ValueError(f"tiny_config['vocab_size']={hf_config.vocab_size} < {len(tokenizer)} tokens of the "
                         "tiny tokenizer; fix the 'vocab_size' key of tiny_config")
    model_cls = AutoModelForCausalLM._model_mapping[type(hf_config)]
    if attn_implementation == "sdpa" and not getattr(model_cls, "_supports_sdpa", True):
        attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
    return model.to(torch_dtype), tokenizer
