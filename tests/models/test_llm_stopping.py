"""Loop stop rule: hand-checked cases, and every decoder applies it identically."""
import pytest
import torch

from bevlm.inference.speculative import SelfSpeculativeDecoder
from bevlm.models.llm.stopping import RepetitionStop, build_stop_rule
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

QUESTIONS = ["What are the important objects in the current scene?",
             "Predict the behavior of the ego vehicle.",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?",
             "Yes?", "What is the moving status of object <c2,CAM_BACK,10.0,20.0>?"]
BUDGET = 40


def test_hand_cases():
    rule = RepetitionStop(max_period=8, min_repeats=3, min_span=12)
    assert rule.repeats_needed(1) == 12 and rule.repeats_needed(3) == 4 and rule.repeats_needed(8) == 3
    chair = [5, 6, 7]                                       # ", one chair"
    assert rule.truncate_to([1, 2] + chair * 3) is None     # 3 copies of a 3-block: 9 < 12 tokens
    assert rule.truncate_to([1, 2] + chair * 4) == 5        # 4th copy: keep [1, 2] + one copy
    assert rule.truncate_to([1] * 11) is None               # "111.1"-like digit runs do not fire
    assert rule.truncate_to([9] + [1] * 12) == 2
    block = list(range(10, 18))                             # period 8: 3 copies (24 >= 12)
    assert rule.truncate_to(block * 2) is None and rule.truncate_to([0] + block * 3) == 9
    assert rule.truncate_to(chair * 4 + [4]) is None        # only loops ending at the last token
    assert rule.truncate_to([]) is None
    assert build_stop_rule(None) is None and build_stop_rule(dict(max_period=2)) == RepetitionStop(max_period=2)
    with pytest.raises(ValueError, match="model.test_cfg.repetition_stop"):
        RepetitionStop(min_repeats=1)
    with pytest.raises(ValueError, match="unknown stop rule"):
        build_stop_rule(dict(type="Nope"))


def _reference_cut(ids: list[int], rule: RepetitionStop) -> list[int]:
    """Where the rule first fires on the rule-free answer, checked prefix by prefix."""
    for n in range(1, len(ids) + 1):
        cut = rule.truncate_to(ids[:n])
        if cut is not None:
            return ids[:cut]
    return ids


@pytest.fixture(scope="module")
def looping_llm():
    """A tiny 4-layer Llama with a large init: its greedy answers fall into short loops."""
    llm = tiny_llm_with_head_bias(num_hidden_layers=4, initializer_range=0.2)
    torch.manual_seed(1)
    prefix = torch.randn(1, 5, llm.hidden_size)
    return llm, prefix, llm.prefill(prefix)


@pytest.mark.parametrize("rule", [RepetitionStop(max_period=4, min_repeats=2, min_span=2),
                                  RepetitionStop(max_period=2, min_repeats=3, min_span=3)])
def test_every_decoder_stops_at_the_same_token(looping_llm, rule):
    llm, prefix, cache = looping_llm
    llm.stop_rule = None
    free = [llm.generate_ids(cache, q, BUDGET) for q in QUESTIONS]
    expected = [_reference_cut(ids, rule) for ids in free]
    assert any(len(e) < len(f) for e, f in zip(expected, free)), "no answer looped: the test checks nothing"
    try:
        llm.stop_rule = rule
        assert [llm.generate_ids(cache, q, BUDGET) for q in QUESTIONS] == expected
        assert [llm.generate_ids_no_cache(prefix, q, BUDGET) for q in QUESTIONS] == expected
        assert llm.generate_ids_batch(cache, QUESTIONS, BUDGET) == expected
        for kw in (dict(use_ngram=True, use_layer_skip=False), dict(use_ngram=True, use_layer_skip=True)):
            dec = SelfSpeculativeDecoder(llm, [1, 2], draft_len=5, **kw)
            assert [dec.generate_ids(cache, q, BUDGET) for q in QUESTIONS] == expected
            assert dec.stats.generated == sum(map(len, expected))
            assert dec.generate_ids_batch(cache, QUESTIONS, BUDGET) == expected  # batched drafting
        # budgets shorter than the loop: the rule and the budget agree on what is returned
        short = [_reference_cut(f[:3], rule) for f in free]
        assert [llm.generate_ids(cache, q, 3) for q in QUESTIONS] == short
        assert llm.generate_ids_batch(cache, QUESTIONS, 3) == short
    finally:
        llm.stop_rule = None
