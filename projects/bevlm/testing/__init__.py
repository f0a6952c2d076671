"""Tiny deterministic fixtures for tests (no downloads, CPU, about a second).

Importing this package registers the tiny LLM builder (``build_tiny_llama``) in
``bevlm.registry.FUNCTIONS``. Nothing in the production package imports it.
"""
from .tiny_llm import (TINY_CHAT_TEMPLATE, TINY_LLAMA_CONFIG, TINY_SPECIAL_TOKENS, TINY_VOCAB_SIZE, build_tiny_llama,
                       tiny_tokenizer)

__all__ = ["TINY_CHAT_TEMPLATE", "TINY_LLAMA_CONFIG", "TINY_SPECIAL_TOKENS", "TINY_VOCAB_SIZE", "build_tiny_llama",
           "tiny_tokenizer"]
