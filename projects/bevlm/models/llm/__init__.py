"""The causal LLM wrapper (the only place that imports transformers / peft)."""
from .generation import PrefixCache
from .hf_causal_lm import HFCausalLM
from .prompt import PromptLayout, chat_layout

__all__ = ["HFCausalLM", "PrefixCache", "PromptLayout", "chat_layout"]
