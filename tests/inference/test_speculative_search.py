"""Skip-layer search: valid sets, exact proxy for the identity drafter, greedy-exact measurement."""
import pytest
import torch

from bevlm.inference.speculative import SelfSpeculativeDecoder, search_skip_layers
from bevlm.inference.speculative.search import _simulate
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

QUESTIONS = ["What are the important objects in the current scene?",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?"]


@pytest.fixture(scope="module")
def llm_and_calib():
    torch.manual_seed(0)
    cfg = dict(TINY_LLAMA_CONFIG, num_hidden_layers=4, initializer_range=0.1)
    llm = HFCausalLM(tiny_config=cfg).eval()
    torch.manual_seed(1)
    cache = llm.prefill(torch.randn(1, 5, llm.hidden_size))
    return llm, [(cache, q) for q in QUESTIONS]


def test_search_returns_a_valid_measured_set(llm_and_calib):
    llm, calib = llm_and_calib
    res = search_skip_layers(llm, calib, max_skip=2, max_new_tokens=12, draft_lens=(2, 4))
    assert len(res.skip_layers) <= 2 and all(1 <= i <= 3 for i in res.skip_layers)
    assert res.draft_len in (2, 4)
    # Trials: the empty set, then 3 + 2 candidates in two greedy rounds.
    assert [t["skip_layers"] for t in res.trials][0] == [] and len(res.trials) == 1 + 3 + 2
    # Skipping nothing: the teacher-forced proxy accepts every draft; cost ratio 1 -> no speed-up.
    empty = res.trials[0]
    assert empty["acceptance"] == 1.0 and empty["cost_ratio"] == 1.0 and empty["expected_speedup"] < 1.0
    assert res.expected_speedup == max(t["expected_speedup"] for t in res.trials)
    assert res.measured["identical"] is True
    assert 0.0 <= res.measured["acceptance"] <= 1.0 and res.measured["tokens_per_full_forward"] >= 1.0
    # The chosen set decodes greedy-exactly.
    dec = SelfSpeculativeDecoder(llm, res.skip_layers, draft_len=res.draft_len)
    for cache, q in calib:
        assert dec.generate_ids(cache, q, 12) == llm.generate_ids(cache, q, 12)


def test_search_candidates_and_sampling(llm_and_calib):
    llm, calib = llm_and_calib
    res = search_skip_layers(llm, calib[:1], max_skip=3, max_new_tokens=6, draft_lens=(3,),
                             candidates=[2, 3], sample_per_round=1, measure=False)
    assert set(res.skip_layers) <= {2, 3} and res.measured is None
    assert len(res.trials) == 1 + 1 + 1  # empty set + one sampled candidate per round, 2 rounds (pool of 2)
    with pytest.raises(ValueError):
        search_skip_layers(llm, calib, max_skip=1, candidates=[0])
    with pytest.raises(ValueError):
        search_skip_layers(llm, [], max_skip=1)


def test_cost_model_simulation():
    # All drafts match: 8 tokens after the first, draft 4 -> verifies of 4 (+1) and 3 (+0 left) tokens.
    cost, accepted, drafted = _simulate([True] * 8, draft_len=4, cost_ratio=0.5, verify_token_cost=0.0)
    assert (accepted, drafted) == (7, 7) and cost == pytest.approx(2 + 0.5 * 7)
    # No draft ever matches: one token per verify, every draft wasted.
    cost, accepted, drafted = _simulate([False] * 3, draft_len=2, cost_ratio=0.5, verify_token_cost=0.1)
    assert accepted == 0 and cost == pytest.approx((1 + 0.2 + 1.0) * 2 + (1 + 0.1 + 0.5))
