"""Every decoding and training path on tiny random LLMs of several architectures.

Llama (SmolLM2's family), Qwen2, Phi-3, Phi-2 (``phi``: ``final_layernorm``, partial rotary,
``dense`` / ``fc1`` / ``fc2``), GPT-NeoX (``embed_in``, ``final_layer_norm``, fused
``query_key_value``, the ``layer_past`` cache keyword of its layers) and Gemma-2 (eager attention,
soft-capped logits, alternating sliding-window layers): a LoRA training step, cached == uncached
greedy, batched == one-by-one, speculative decoding with layer-skip drafting == greedy, the hand-run
layer loop == the HF forward, and int4 RTN quantisation (by default of every decoder-layer Linear,
under the family's names).
"""
import json

import pytest
import torch
from torch import nn

from bevlm.inference.quantization import (QuantLinear4, RTNSettings, default_include, int8_dynamic_available,
                                          quant_settings, quantize_model)
from bevlm.inference.speculative import LayerSkipModel, SelfSpeculativeDecoder
from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.architectures import decoder_parts, linear_names, lora_targets
from bevlm.models.llm.cache_api import cache_kwargs
from bevlm.models.llm.generation import fork_cache
from bevlm.testing import TINY_ARCH_CONFIGS

torch.set_num_threads(1)

ARCHS = sorted(TINY_ARCH_CONFIGS)
P = 5
MAX_NEW = 10
LORA = dict(r=4, alpha=8, dropout=0.0)  # target_modules: the architecture's default
QUESTIONS = ["What are the important objects in the current scene?",
             "Predict the behavior of the ego vehicle.",
             "Yes?"]
BLOCKS = [[("What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?", "Going ahead."),
           ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight.")],
          [("Yes?", "No.")]]


def _config(arch: str, **extra) -> dict:
    """4 layers and a larger init: greedy answers vary and skipping layers changes the argmax."""
    return dict(TINY_ARCH_CONFIGS[arch], num_hidden_layers=4, initializer_range=0.2, **extra)


def _prefix(llm: HFCausalLM, seed: int = 1, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, P, llm.hidden_size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=ARCHS)
def arch_llm(request):
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=_config(request.param)).eval()
    cache = llm.prefill(_prefix(llm))
    return request.param, llm, cache


def test_architecture_is_built(arch_llm):
    arch, llm, _ = arch_llm
    assert llm.lm.config.model_type == arch
    assert llm.num_layers == 4 and llm.lm.config.vocab_size == len(llm.tokenizer)
    parts = decoder_parts(llm.lm)
    assert len(parts.layers) == 4 and parts.rotary_emb is not None
    assert (parts.logit_softcap is not None) == (arch == "gemma2")


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_training_step(arch):
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=_config(arch), lora=LORA).train()
    trainable = {n: p for n, p in llm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 4 * len(lora_targets(arch)) * 2  # layers x targets x (A, B)
    out = llm.forward_train(llm.build_batch(BLOCKS, num_prefix=P), _prefix(llm, batch=2))
    assert torch.isfinite(out["loss_lm"]) and out["hidden_prefix"].shape == (2, P, llm.hidden_size)
    out["loss_lm"].backward()
    for name, p in trainable.items():
        if "lora_B" in name:  # lora_B starts at zero, so lora_A's first gradient is zero
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_cached_equals_uncached(arch_llm):
    _, llm, cache = arch_llm
    prefix = _prefix(llm)
    outputs = []
    for q in QUESTIONS:
        ids = llm.generate_ids(cache, q, MAX_NEW)
        assert ids == llm.generate_ids_no_cache(prefix, q, MAX_NEW), q
        outputs.append(ids)
    assert len({tuple(o) for o in outputs}) > 1 or len(set(outputs[0])) > 1  # not a degenerate model
    assert cache.past_key_values.get_seq_length() == cache.prefix_len  # the prefix cache is not mutated
    llm.share_text_prefix = True  # the prompt text prefilled once, the prefix embeddings after it
    try:
        shared = llm.prefill(prefix)
        assert [llm.generate_ids(shared, q, MAX_NEW) for q in QUESTIONS] == outputs
    finally:
        llm.share_text_prefix = False


def test_batched_equals_one_by_one(arch_llm):
    _, llm, cache = arch_llm
    single = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    assert llm.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == single
    budgets = [2, MAX_NEW, 5]
    assert llm.generate_ids_batch(cache, QUESTIONS, budgets) == [s[:b] for s, b in zip(single, budgets)]


def test_layer_loop_matches_full_model(arch_llm):
    """Skipping nothing, the hand-run layer loop (rope, mask, cache keyword, final norm, soft-cap)
    gives the HF forward's logits and fills the cache the same way."""
    _, llm, cache = arch_llm
    ids = torch.tensor([llm._query_ids(QUESTIONS[0])])  # [1, L]
    positions = torch.arange(cache.prefix_len, cache.prefix_len + ids.shape[1])[None]
    with torch.no_grad():
        ref = llm.lm(input_ids=ids, position_ids=positions,
                     **cache_kwargs(llm.lm, fork_cache(cache.past_key_values))).logits
        past = fork_cache(cache.past_key_values)
        got = LayerSkipModel(llm.lm, []).logits(ids, past, cache.prefix_len)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert all(layer.get_seq_length() == cache.prefix_len + ids.shape[1] for layer in past.layers)


@pytest.mark.parametrize("batched", [False, True])
def test_speculative_layer_skip_equals_greedy(arch_llm, batched):
    _, llm, cache = arch_llm
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    # The batched decoder drafts model-free only (n-gram); one by one, the layer-skip drafter alone.
    dec = SelfSpeculativeDecoder(llm, [2], draft_len=3, use_ngram=batched, batched=batched)
    if batched:
        assert dec.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == refs
    else:
        assert [dec.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS] == refs
        assert dec.stats.skip_drafted > 0 and dec.stats.draft_forwards == dec.stats.skip_drafted
    assert 0.0 < dec.drafter.cost_ratio() < 1.0
    assert cache.past_key_values.get_seq_length() == cache.prefix_len


@pytest.mark.parametrize("arch", ARCHS)
def test_int4_rtn_quantisation(arch):
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=_config(arch)).eval()
    ids = torch.randint(4, len(llm.tokenizer), (2, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = llm.lm(input_ids=ids).logits
    report = quantize_model(llm, dict(method="rtn", group_size=32, kernel="dequant", include=linear_names(arch)))
    assert len(report.layers) == 4 * len(linear_names(arch))  # every decoder-layer Linear
    with torch.no_grad():
        got = llm.lm(input_ids=ids).logits
    assert torch.isfinite(got).all() and not torch.equal(got, ref)
    assert (got - ref).abs().max() < ref.abs().max()  # close to the float model, not garbage
    cache = llm.prefill(_prefix(llm))
    assert len(llm.generate_ids(cache, QUESTIONS[0], 4)) <= 4


def test_saved_model_directory_loads_and_sdpa_falls_back_to_eager(tmp_path):
    """A local HF directory of another architecture loads through ``pretrained=``; Gemma-2 (no SDPA
    attention) is loaded eager with a warning instead of failing."""
    torch.manual_seed(0)
    src = HFCausalLM(tiny_config=_config("gemma2")).eval()
    src.lm.save_pretrained(tmp_path)
    src.tokenizer.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="eager"):
        llm = HFCausalLM(pretrained=str(tmp_path), attn_implementation="sdpa").eval()
    assert llm.lm.config.model_type == "gemma2" and llm.lm.config._attn_implementation == "eager"
    cache, ref_cache = llm.prefill(_prefix(llm)), src.prefill(_prefix(src))
    assert llm.generate_ids(cache, QUESTIONS[0], MAX_NEW) == src.generate_ids(ref_cache, QUESTIONS[0], MAX_NEW)


@pytest.mark.parametrize("arch", ARCHS)
def test_default_quant_include_is_every_decoder_linear_of_the_architecture(arch):
    """Without ``include`` int4 quantises every Linear of every decoder layer, under the family's own
    names (GPT-NeoX has none of the Llama names), and not the LM head; an explicit include wins."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=_config(arch)).eval()
    in_layers = {id(m) for layer in decoder_parts(llm.lm).layers for m in layer.modules()}
    expected = [n for n, m in llm.named_modules() if type(m) is nn.Linear and id(m) in in_layers]
    assert default_include(llm) == linear_names(arch) and len(expected) == 4 * len(linear_names(arch))
    head = llm.lm.get_output_embeddings()
    settings = RTNSettings(group_size=32, kernel="dequant")
    assert settings.include is None and quant_settings(json.loads(json.dumps(settings.to_dict()))) == settings
    report = quantize_model(llm, settings)
    assert report.layers == expected
    assert all(isinstance(llm.get_submodule(n), QuantLinear4) for n in expected)
    assert llm.lm.get_output_embeddings() is head and type(head) is nn.Linear  # the head stays float
    assert not any(type(m) is nn.Linear for layer in decoder_parts(llm.lm).layers for m in layer.modules())

    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=_config(arch)).eval()
    first = linear_names(arch)[0]
    report = quantize_model(llm, dict(method="rtn", group_size=32, kernel="dequant", include=(first,)))
    assert len(report.layers) == 4 and all(n.rsplit(".", 1)[-1] == first for n in report.layers)


@pytest.mark.skipif(not int8_dynamic_available(), reason="no fbgemm int8 engine")
def test_default_int8_include_follows_the_architecture_too():
    llm = HFCausalLM(tiny_config=_config("gpt_neox")).eval()
    report = quantize_model(llm, dict(method="int8_dynamic"))
    assert len(report.layers) == 4 * len(linear_names("gpt_neox"))
    assert {n.rsplit(".", 1)[-1] for n in report.layers} == set(linear_names("gpt_neox"))
