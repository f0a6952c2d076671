"""Tiny deterministic fixtures for tests (no downloads, CPU, about a second).

Importing this package registers the tiny LLM builders (``build_tiny_llama``, and
``build_tiny_causal_lm`` for the other architectures of ``TINY_ARCH_CONFIGS``) in
``bevlm.registry.FUNCTIONS``. Nothing in the production package imports it.
"""
from .tiny_llm import (TINY_ARCH_CONFIGS, TINY_CHAT_TEMPLATE, TINY_LLAMA_CONFIG, TINY_SPECIAL_TOKENS, TINY_VOCAB_SIZE,
                       build_tiny_causal_lm, build_tiny_llama, tiny_tokenizer)

__all__ = ["TINY_ARCH_CONFIGS", "TINY_CHAT_TEMPLATE", "TINY_LLAMA_CONFIG", "TINY_SPECIAL_TOKENS", "TINY_VOCAB_SIZE",
           "build_tiny_causal_lm", "build_tiny_llama", "tiny_tokenizer"]
