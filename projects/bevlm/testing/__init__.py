"""Tiny deterministic fixtures for tests (no downloads, CPU, about a second)."""
from .tiny_llm import TINY_CHAT_TEMPLATE, TINY_LLAMA_CONFIG, TINY_SPECIAL_TOKENS, TINY_VOCAB_SIZE, tiny_tokenizer

__all__ = ["TINY_CHAT_TEMPLATE", "TINY_LLAMA_CONFIG", "TINY_SPECIAL_TOKENS", "TINY_VOCAB_SIZE", "tiny_tokenizer"]
