"""The BEVVLM test-time configuration: one typed ``test_cfg``, one setter, frame decoders by name."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from bevlm.inference.speculative import SelfSpeculativeDecoder
from bevlm.models.detectors.test_cfg import TestConfig
from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.stopping import RepetitionStop
from bevlm.models.pruning import PruningSetting
from bevlm.models.qa import FrameDecoder, GreedyBatchDecoder, GreedySequentialDecoder
from bevlm.registry import MODELS
from bevlm.testing import TINY_LLAMA_CONFIG, build_tiny_llama
from tests.conftest import REPO
from tests.model_helpers import tiny_bevvlm_one_frame

init_default_scope("bevlm")
torch.set_num_threads(1)


def test_parse_defaults_and_unknown_keys():
    cfg = TestConfig.from_dict(dict(max_new_tokens=8, pruning=dict(bev_keep_ratio=0.5)))
    assert cfg.max_new_tokens == 8 and cfg.pruning == PruningSetting(bev_keep_ratio=0.5)
    assert TestConfig.from_dict(None) == TestConfig()
    with pytest.raises(KeyError, match="max_new_token.*valid keys.*max_new_tokens"):
        TestConfig.from_dict(dict(max_new_token=8))
    with pytest.raises(ValueError, match="test_cfg.max_new_tokens"):
        TestConfig.from_dict(dict(max_new_tokens=0))
    with pytest.raises(ValueError, match="bev_keep_ratio"):
        TestConfig.from_dict(dict(pruning=dict(bev_keep_ratio=0.0)))
    merged = cfg.merged(dict(batch_questions=False))
    assert not merged.batch_questions and merged.max_new_tokens == 8 and cfg.batch_questions  # a copy
    assert TestConfig.from_dict(merged.as_dict()) == merged
    for bad in (-1, "32", True):
        with pytest.raises(ValueError, match="prefill_group_tokens"):
            TestConfig.from_dict(dict(prefill_group_tokens=bad))
    assert TestConfig.from_dict(dict(prefill_group_tokens=None)).prefill_group_tokens is None


def test_every_base_config_key_is_a_test_cfg_key():
    """Every key of the main config's test_cfg parses, and parsing keeps its value."""
    raw = Config.fromfile(f"{REPO}/configs/bev_vlm.py").model.test_cfg.to_dict()
    parsed = TestConfig.from_dict(raw)
    kept = parsed.as_dict()
    assert {k: kept[k] for k in raw if k != "pruning"} == {k: v for k, v in raw.items() if k != "pruning"}
    assert parsed.pruning == PruningSetting(**raw.get("pruning", {}))
    assert TestConfig.from_dict(kept) == parsed


def test_old_model_level_keys_name_their_new_place():
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py").model.to_dict()
    with pytest.raises(TypeError, match=r"model.test_cfg.*test_cfg.max_new_tokens"):
        MODELS.build(dict(cfg, max_new_tokens=4))
    with pytest.raises(TypeError, match="unknown arguments.*not_a_key"):
        MODELS.build(dict(cfg, not_a_key=1))


@pytest.fixture(scope="module")
def setup(tiny_world):
    return tiny_bevvlm_one_frame(tiny_world, encoder_layers=1)


def _answers(model, imgs, samples):
    model.reset_test_state()
    with torch.no_grad():
        return model(inputs={"imgs": imgs}, data_samples=copy.deepcopy(samples), mode="predict")[0].pred_answers


def test_set_test_cfg_rebuilds_the_derived_components(setup):
    model = copy.deepcopy(setup[0])
    assert isinstance(model.frame_decoder, GreedyBatchDecoder) and isinstance(model.frame_decoder, FrameDecoder)
    # the stop rule is the one the config describes
    stop_cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py").model.test_cfg.repetition_stop
    assert model.llm.stop_rule == RepetitionStop(**stop_cfg)
    before = model.test_cfg
    change = dict(batch_questions=False, repetition_stop=None, share_prompt_cache=True)
    cfg = model.set_test_cfg(change)
    assert cfg is model.test_cfg and not cfg.batch_questions
    assert cfg == before.merged(change) and cfg.max_new_tokens == before.max_new_tokens  # the rest kept
    assert isinstance(model.frame_decoder, GreedySequentialDecoder)
    assert model.llm.stop_rule is None and model.llm.share_text_prefix
    model.set_test_cfg(dict(prefill_group_tokens=None))
    assert model.llm.prefill_overhead == float("inf")
    model.set_test_cfg(dict(speculative=dict(skip_layers=[], use_layer_skip=False, batched=True)))
    assert isinstance(model.frame_decoder, SelfSpeculativeDecoder) and model.frame_decoder.llm is model.llm
    with pytest.raises(KeyError, match="valid keys"):
        model.set_test_cfg(dict(decoder="greedy"))
    with pytest.raises(ValueError, match="test_cfg.speculative.*skip_layers"):
        model.set_test_cfg(dict(speculative=dict(draft_len=4)))
    with pytest.raises(ValueError, match="test_cfg.speculative"):
        model.set_test_cfg(dict(speculative=dict(skip_layers=[], datastore=dict(max_ngram=4), search={})))
    assert isinstance(model.frame_decoder, SelfSpeculativeDecoder)  # a refused change leaves the model as it was


def test_every_frame_decoder_answers_as_greedy(setup):
    """Greedy batched, greedy batch-1 and self-speculative (batch-1 and batched; layer-skip drafts or
    a quantised copy of the same weights as the draft model) decoders built from test_cfg give the
    same answers for a frame."""
    model, imgs, samples = copy.deepcopy(setup[0]), setup[1], setup[2]
    ref = _answers(model, imgs, samples)
    settings = [dict(batch_questions=False), dict(batch_questions=True, prefill_group_tokens=None),
                dict(batch_questions=True, prefill_group_tokens=0),
                dict(speculative=dict(skip_layers=[1], draft_len=3)),
                dict(speculative=dict(skip_layers=[], use_layer_skip=False, chain_drafts=True, batched=True)),
                dict(speculative=dict(skip_layers=[], use_layer_skip=False, draft_len=3, ngram_min_n=3,
                                      quant_draft="int4")),
                dict(speculative=dict(skip_layers=[], use_ngram=False, use_layer_skip=False, draft_len=3,
                                      quant_draft=dict(precision="bfloat16", prefix="verifier")))]
    for overrides in settings:
        model.set_test_cfg(overrides)
        assert _answers(model, imgs, samples) == ref, overrides
        quant = getattr(model.frame_decoder, "quant_drafter", None)
        if quant is not None:  # the draft model proposed and the verifier checked its drafts
            stats = model.frame_decoder.stats
            assert stats.quant_drafted > 0 and stats.quant_accepted <= stats.quant_drafted


def test_llm_takes_an_injected_model_or_a_registered_builder():
    torch.manual_seed(0)
    lm, tok = build_tiny_llama(dict(TINY_LLAMA_CONFIG))
    injected = HFCausalLM(lm=lm, tokenizer=tok).eval()
    assert injected.lm is lm and injected.hidden_size == TINY_LLAMA_CONFIG["hidden_size"]
    torch.manual_seed(0)
    built = HFCausalLM(builder=dict(type="build_tiny_llama", config=dict(TINY_LLAMA_CONFIG))).eval()
    torch.manual_seed(0)
    short = HFCausalLM(tiny_config=dict(TINY_LLAMA_CONFIG)).eval()
    for a, b in zip(built.parameters(), short.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="lm and tokenizer together"):
        HFCausalLM(lm=lm)
    with pytest.raises(KeyError, match="not_a_builder.*FUNCTIONS"):
        HFCausalLM(builder=dict(type="not_a_builder"))
