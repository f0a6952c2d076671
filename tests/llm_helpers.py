"""Tiny LLMs shared by the decoding tests."""
import torch
from torch import nn

from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG


def tiny_llm_with_head_bias(seed: int = 0, **config) -> HFCausalLM:
    """The tiny Llama (``TINY_LLAMA_CONFIG`` updated by ``config``, untied head) with a zero
    ``lm_head`` bias, so a test can push EOS by raising its bias."""
    torch.manual_seed(seed)
    llm = HFCausalLM(tiny_config=dict(TINY_LLAMA_CONFIG, tie_word_embeddings=False, **config)).eval()
    old = llm.lm.lm_head
    head = nn.Linear(old.in_features, old.out_features, bias=True)
    head.weight.data.copy_(old.weight.data)
    head.bias.data.zero_()
    llm.lm.lm_head = head
    return llm
