"""Replaying batched speculative decoding from a trace: faithful to the recorded run, and predicting
the steps a decoder with another draft setting really takes."""
import numpy as np
import pytest
import torch

from bevlm.inference.speculative import NgramDatastore, SelfSpeculativeDecoder
from bevlm.inference.speculative.ngram import question_key
from bevlm.inference.speculative.ngram import lookup_continuations, ngram_propose
from bevlm.inference.speculative.replay import (StepCost, check_trace, compare_policies, current_policy,
                                                fit_step_cost, lookup_alternatives, max_draft, replay_frame,
                                                truncate_to_accepted)
from bevlm.models.llm.batched_generation import query_groups
from tests.inference.test_speculative_decoding import EOS_BIAS, MAX_NEW, QUESTIONS, llm_and_cache  # noqa: F401

torch.set_num_threads(1)

QS = QUESTIONS + ["What is the moving status of object <c2,CAM_BACK,10.0,20.0>?"]


def _decoder(llm, cache, max_draft_len=16, others=True):
    """A batched chained decoder with a datastore of the greedy answers and noise (as in the tests
    of batched decoding), so lookup, the datastore and rejections all occur."""
    eos = llm.tokenizer.eos_token_id
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in QS]
    noise = [[(t * 7 + 3) % 200 for t in r] for r in refs]
    store = NgramDatastore(refs[:3] + noise, max_ngram=3, min_ngram=1, min_share=0.0, end_id=eos,
                           keys=[question_key(q) for q in QS[:3]] + [question_key(q) for q in QS])
    return SelfSpeculativeDecoder(llm, [], use_ngram=True, use_layer_skip=False, ngram_min_n=1, ngram_draft_len=3,
                                  datastore=store, store_draft_len=4, chain_drafts=True, max_draft_len=max_draft_len,
                                  batched=True, lookup_other_answers=others)


@pytest.fixture(params=[0.0, EOS_BIAS], ids=["no-eos-bias", "eos-bias"])
def biased(request, llm_and_cache):  # noqa: F811
    llm, cache = llm_and_cache
    eos = llm.tokenizer.eos_token_id
    llm.lm.lm_head.bias.data[eos] = request.param
    yield llm, cache
    llm.lm.lm_head.bias.data[eos] = 0.0


@pytest.mark.parametrize("others", [True, False])
def test_trace_records_answers_and_replays_to_the_recorded_steps(biased, others):
    llm, cache = biased
    dec = _decoder(llm, cache, others=others)
    dec.trace = []
    budgets = [MAX_NEW, 3, MAX_NEW, 0, 5]
    out = dec.generate_ids_batch(cache, QS, budgets)
    (record,) = dec.trace
    assert record["answers"] == out and record["budgets"] == budgets and record["ended"][3] == "budget"
    prefills = len(query_groups([len(llm._query_ids(q)) for q in QS]))
    assert len(record["steps"]) == dec.stats.full_forwards - prefills  # every verify forward, timed
    assert all(rows >= 1 and width >= 1 and seconds > 0 for rows, width, _, seconds in record["steps"])
    assert check_trace(dec.trace, dec) == []
    replayed = replay_frame(record, dec)
    assert replayed.drafted == dec.stats.drafted and replayed.accepted == dec.stats.accepted
    assert [c for _, _, c in replayed.steps] == [s[2] for s in record["steps"]]  # cache lengths too


@pytest.mark.parametrize("m", [1, 2, 5])
def test_replay_predicts_a_decoder_with_shorter_drafts(biased, m):
    """The replay of max_draft(m) on a max_draft_len=16 trace gives the steps that a decoder built with
    max_draft_len=m records when it really runs."""
    llm, cache = biased
    long, short = _decoder(llm, cache), _decoder(llm, cache, max_draft_len=m)
    long.trace, short.trace = [], []
    assert long.generate_ids_batch(cache, QS, MAX_NEW) == short.generate_ids_batch(cache, QS, MAX_NEW)
    predicted = replay_frame(long.trace[0], long, max_draft(m))
    assert [(a, w) for a, w, _ in predicted.steps] == [(s[0], s[1]) for s in short.trace[0]["steps"]]
    assert predicted.drafted == short.stats.drafted and predicted.accepted == short.stats.accepted


def test_truncating_drafts_to_what_is_accepted_keeps_the_steps_and_feeds_fewer_positions(biased):
    llm, cache = biased
    dec = _decoder(llm, cache)
    dec.trace = []
    dec.generate_ids_batch(cache, QS, MAX_NEW)
    cur, best = replay_frame(dec.trace[0], dec, current_policy), replay_frame(dec.trace[0], dec, truncate_to_accepted)
    assert len(best.steps) == len(cur.steps) and [a for a, _, _ in best.steps] == [a for a, _, _ in cur.steps]
    assert best.accepted == best.drafted == cur.accepted < cur.drafted  # the current drafts had rejections
    assert sum(a * w for a, w, _ in best.steps) <= sum(a * w for a, w, _ in cur.steps)


def test_step_cost_fit_recovers_known_coefficients_and_compares_policies(biased):
    llm, cache = biased
    dec = _decoder(llm, cache)
    dec.trace = []
    dec.generate_ids_batch(cache, QS, MAX_NEW)
    true = StepCost(0.05, 0.01, 0.002, 0.0005, r2=1.0, measured_s=0.0)
    rng = np.random.default_rng(0)
    synthetic = [dict(steps=[[int(a), int(w), int(c), true(int(a), int(w), int(c))]
                             for a, w, c in zip(rng.integers(1, 9, 40), rng.integers(1, 17, 40), rng.integers(50, 900, 40))])]
    fit = fit_step_cost(synthetic)
    assert np.allclose([fit.fixed, fit.per_row, fit.per_position, fit.per_entry],
                       [0.05, 0.01, 0.002, 0.0005], rtol=1e-6) and fit.r2 > 0.999999
    rows = compare_policies(dec.trace, dec, {"current": current_policy, "oracle": truncate_to_accepted,
                                             "one": max_draft(1)}, cost=true)
    assert rows[0]["speedup_vs_first"] == 1.0 and rows[0]["steps"] == len(dec.trace[0]["steps"])
    assert rows[1]["speedup_vs_first"] >= 1.0 and rows[2]["steps"] >= rows[0]["steps"]
    with pytest.raises(ValueError, match="at least 4"):
        fit_step_cost([dict(steps=[[1, 1, 10, 0.1]])])


def test_lookup_continuations_hand_case():
    #        0  1  2  3  4  5  6  7  8  9 10 11   suffix [1, 2] matched at 7, 4 and 0 (latest first)
    seq = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 9, 1, 2]
    assert lookup_continuations(seq, 2, 1, 3, 5) == [[3, 9, 1], [5, 1, 2], [3, 4, 1]]
    assert lookup_continuations(seq, 2, 1, 3, 5)[0] == ngram_propose(seq, 2, 1, 3)
    assert lookup_continuations(seq, 2, 1, 1, 5) == [[3], [5]]  # [3] again is a prefix already taken
    assert lookup_continuations(seq, 2, 1, 3, 0) == [] and lookup_continuations([7], 2, 1, 3, 2) == []


def test_candidate_drafts_replay(biased):
    """One candidate is the decoder's own policy; more candidates keep the decoder's draft first,
    verify each as a row of its own, and take no more steps on these frames."""
    llm, cache = biased
    dec = _decoder(llm, cache)
    dec.trace = []
    dec.generate_ids_batch(cache, QS, MAX_NEW)
    cur = replay_frame(dec.trace[0], dec, current_policy)
    one = replay_frame(dec.trace[0], dec, lookup_alternatives(1))
    assert (one.steps, one.drafted, one.accepted) == (cur.steps, cur.drafted, cur.accepted)
    history, answer = list(dec.trace[0]["queries"][0]) * 2, []
    cands, _ = lookup_alternatives(3)(dec, history, MAX_NEW, answer, None, None)
    assert cands[0] == dec.model_free_draft(history, MAX_NEW, answer, None)[0]
    assert len(cands) == len({tuple(c) for c in cands}) <= 3
    three = replay_frame(dec.trace[0], dec, lookup_alternatives(3))
    assert three.accepted >= cur.accepted and len(three.steps) <= len(cur.steps)
    assert sum(r for r, _, _ in three.steps) > sum(r for r, _, _ in cur.steps)  # alternatives were verified
    with pytest.raises(ValueError, match="k=0"):
        lookup_alternatives(0)
