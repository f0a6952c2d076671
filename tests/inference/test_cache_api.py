"""KV-cache keyword of transformers (``cache`` / older ``past_key_values``): every decoding path goes
through :mod:`bevlm.models.llm.cache_api`, so none raises the ``past_key_values`` FutureWarning and
none reads the deprecated ``output.past_key_values`` alias; outputs stay greedy-identical."""
import dataclasses
import inspect
import warnings

import pytest
import torch
from torch import nn

from bevlm.inference.quantization.bench import _decode_step_seconds
from bevlm.inference.speculative import SelfSpeculativeDecoder
from bevlm.inference.speculative.benchmark import _verify_cost
from bevlm.models.llm.cache_api import OLD_NAME, cache_kwarg, cache_kwargs, output_cache
from bevlm.models.pruning import fastv_prefill
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

P = 6
MAX_NEW = 10
QUESTIONS = ["What are the important objects in the current scene?",
             "Predict the behavior of the ego vehicle.",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?"]


def _library_renamed() -> bool:
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" in BaseModelOutputWithPast.__dataclass_fields__


@pytest.fixture()
def no_deprecated_cache_use(monkeypatch):
    """FutureWarning is an error, and reading the deprecated output alias fails the test."""
    if _library_renamed():
        from transformers.utils.generic import ModelOutput

        def _fail(self):
            raise AssertionError("output.past_key_values (deprecated alias) was read; use output_cache()")

        monkeypatch.setattr(ModelOutput, "past_key_values", property(_fail))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        yield


def test_helper_names_what_each_forward_accepts():
    llm = tiny_llm_with_head_bias(num_hidden_layers=2)
    decoder = llm.lm.get_decoder()
    for module in (llm.lm, decoder, decoder.layers[0]):
        assert cache_kwarg(module) in inspect.signature(type(module).forward).parameters
    from transformers import DynamicCache

    past = DynamicCache(config=llm.lm.config)
    with torch.no_grad():
        out = llm.lm(input_ids=torch.tensor([[5, 6, 7]]), **cache_kwargs(llm.lm, past), use_cache=True)
    assert output_cache(out) is past and past.get_seq_length() == 3


def test_helper_falls_back_to_the_old_name():
    """An older 5.x forward / output that only knows ``past_key_values`` is still served."""
    class OldForward(nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    @dataclasses.dataclass
    class OldOutput:
        past_key_values: object = None

    assert cache_kwarg(OldForward()) == OLD_NAME
    sentinel = object()
    assert output_cache(OldOutput(past_key_values=sentinel)) is sentinel


def test_decoding_paths_raise_no_deprecation(no_deprecated_cache_use):
    """Greedy, batched, speculative (n-gram + layer skip), speculative batched, shared-text prefill,
    FastV prefill and the two benchmarks' timed forwards, all under ``error::FutureWarning``."""
    llm = tiny_llm_with_head_bias(num_hidden_layers=4, initializer_range=0.2)
    torch.manual_seed(1)
    prefix = torch.randn(1, P, llm.hidden_size)
    cache = llm.prefill(prefix)
    ref = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    assert ref == [llm.generate_ids_no_cache(prefix, q, MAX_NEW) for q in QUESTIONS]
    assert llm.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == ref

    for use_ngram in (False, True):  # layer-skip drafts alone, then n-gram lookup first
        dec = SelfSpeculativeDecoder(llm, [1, 3], draft_len=3, use_ngram=use_ngram)
        assert [dec.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS] == ref
        assert dec.stats.draft_forwards > 0  # the layer loop ran
    assert dec.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == ref

    llm.share_text_prefix = True
    try:
        shared = llm.prefill(prefix)
        assert [llm.generate_ids(shared, q, MAX_NEW) for q in QUESTIONS] == ref
    finally:
        llm.share_text_prefix = False

    pruned = fastv_prefill(llm, prefix, (0, P - 2), 0.5)
    assert pruned.past_key_values.get_seq_length() < cache.past_key_values.get_seq_length()
    assert len(llm.generate_ids(pruned, QUESTIONS[0], MAX_NEW)) <= MAX_NEW

    assert len(_decode_step_seconds(llm.lm, cache.past_key_values, cache.prefix_len, 2, 5)) == 2
    assert isinstance(_verify_cost(llm, cache, k=2, repeats=1), float)
