"""Multiple-choice answers by option likelihood: the batched log-probabilities equal a recompute
without any cache, the chosen letter is the argmax, and test_cfg.multiple_choice wires it in."""
import math

import pytest
import torch
import torch.nn.functional as F

from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.prompt import block_ids
from bevlm.models.qa import QAPolicy, choose_by_likelihood, is_multiple_choice
from bevlm.structures import QAItem
from bevlm.structures.qa_families import split_multiple_choice
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

MC = ("Predict the behavior of the ego vehicle. Please select the correct answer from the following options: "
      "A. The ego vehicle is going straight. The ego vehicle is driving slowly. B. The ego vehicle is steering "
      "to the left. The ego vehicle is driving fast. C. The ego vehicle is not moving. D. Back up.")


def _llm() -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(tiny_config=dict(TINY_LLAMA_CONFIG)).eval()


def _reference_logprob(llm: HFCausalLM, prefix: torch.Tensor, question: str, answer: str) -> float:
    """Sum of log p(answer tokens) from one forward over prompt text + prefix + query + answer, no cache."""
    query, ans = block_ids(llm.tokenizer, llm.prompt, question, answer)
    inputs = llm._prefix_inputs(prefix)
    tail = llm.embed_tokens(torch.tensor([query + ans]))
    with torch.no_grad():
        logits = llm.lm(inputs_embeds=torch.cat([inputs, tail], 1)).logits[0].float()
    start = inputs.shape[1] + len(query)
    logp = F.log_softmax(logits, -1)
    return float(sum(logp[start + j - 1, t] for j, t in enumerate(ans)))


def test_split_multiple_choice_reads_the_official_option_list():
    stem, options = split_multiple_choice(MC)
    assert stem == "Predict the behavior of the ego vehicle."
    assert options["A"] == "The ego vehicle is going straight. The ego vehicle is driving slowly."
    assert options["C"] == "The ego vehicle is not moving." and options["D"] == "Back up."
    assert split_multiple_choice("Is <c1,CAM_FRONT,1.0,2.0> a traffic sign or a road barrier?") is None


@pytest.mark.parametrize("share", [False, True])
def test_batched_logprobs_equal_a_recompute_without_cache(share):
    llm = _llm()
    llm.share_text_prefix = share
    torch.manual_seed(1)
    prefix = torch.randn(1, 5, llm.hidden_size)
    pairs = [("What is the moving status of object <c1,CAM_FRONT,1.0,2.0>?", "Going ahead."),
             ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight. It is slow."),
             ("Q?", "No.")]  # rows of different lengths: left padding must not change any score
    cache = llm.prefill(prefix)
    before = [t.clone() for layer in cache.past_key_values.layers for t in (layer.keys, layer.values)]
    got = llm.answer_logprobs(cache, pairs)
    want = [_reference_logprob(llm, prefix, q, a) for q, a in pairs]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(v < 0 for v in got)
    after = [t for layer in cache.past_key_values.layers for t in (layer.keys, layer.values)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the frame's cache is not mutated
    with pytest.raises(ValueError, match="at least one token"):
        from bevlm.models.llm.batched_generation import answer_logprobs
        answer_logprobs(llm.lm, cache, [[1]], [[]], llm.pad_id)


@pytest.mark.parametrize("mode", ["full", "three_rounds"])
def test_the_chosen_letter_is_the_likeliest_option_in_the_policy_format(mode):
    llm = _llm()
    policy = QAPolicy(mode=mode)
    torch.manual_seed(2)
    cache = llm.prefill(torch.randn(1, 5, llm.hidden_size))
    items = [QAItem(MC, "", "behavior", 7, "behavior"),
             QAItem("What is the moving status of object <c2,CAM_BACK,3.0,4.0>? Please select the correct "
                    "answer from the following options: A. Going ahead. B. Turn left. C. Stopped. D. Back up.",
                    "", "perception", 1, "moving_status")]
    assert all(is_multiple_choice(q) for q in items)
    assert not is_multiple_choice(QAItem("Predict the behavior of the ego vehicle.", "", "behavior", 0))
    chosen, scores = choose_by_likelihood(llm, cache, items, policy)
    for qa in items:
        stem, options = split_multiple_choice(qa.question)
        # each option scored alone, in the policy's training format, gives the same number
        for letter, text in options.items():
            one = [QAItem(stem, text, qa.stage, qa.index, qa.family)]
            solo = llm.answer_logprobs(cache, [(policy.question_text(one), policy.answer_text(one))])[0]
            assert math.isclose(scores[qa.index][letter], solo, abs_tol=1e-4)
        assert chosen[qa.index] == max(scores[qa.index], key=scores[qa.index].get)
    with pytest.raises(ValueError, match="no option list"):
        choose_by_likelihood(llm, cache, [QAItem("Q?", "", "perception", 0)], policy)


def test_test_cfg_multiple_choice_is_validated():
    from bevlm.models.detectors.test_cfg import TestConfig

    assert TestConfig().multiple_choice == "generate"
    assert TestConfig.from_dict({"multiple_choice": "likelihood"}).multiple_choice == "likelihood"
    with pytest.raises(ValueError, match="multiple_choice"):
        TestConfig.from_dict({"multiple_choice": "vote"})


def test_calibrated_scores_are_the_likelihood_minus_the_content_free_prior():
    """Calibrated scoring: each option's score is log p(option | frame) - log p(option | content-free
    prefix), both recomputed here without any cache; the prior is scored once per distinct pair."""
    from bevlm.models.qa import OptionPrior

    llm = _llm()
    policy = QAPolicy(mode="full")
    torch.manual_seed(3)
    frame, blank = torch.randn(1, 5, llm.hidden_size), torch.randn(1, 5, llm.hidden_size)
    cache = llm.prefill(frame)
    prior = OptionPrior(llm, blank)
    items = [QAItem(MC, "", "behavior", 7, "behavior")]
    chosen, scores = choose_by_likelihood(llm, cache, items, policy, prior=prior)
    stem, options = split_multiple_choice(MC)
    for letter, text in options.items():
        one = [QAItem(stem, text, "behavior", 7, "behavior")]
        q, a = policy.question_text(one), policy.answer_text(one)
        want = _reference_logprob(llm, frame, q, a) - _reference_logprob(llm, blank, q, a)
        assert math.isclose(scores[7][letter], want, abs_tol=2e-4)
    assert chosen[7] == max(scores[7], key=scores[7].get)
    assert len(prior._memo) == len(options)
    calls = []
    real = llm.answer_logprobs
    llm.answer_logprobs = lambda c, pairs: calls.append(len(pairs)) or real(c, pairs)
    again, _ = choose_by_likelihood(llm, cache, items, policy, prior=prior)
    assert again == chosen and calls == [len(options)]  # the frame's options only: the prior is remembered
    # a prior equal to the frame itself leaves every option at zero: the tie goes to the first letter
    same, flat = choose_by_likelihood(llm, cache, items, policy, prior=OptionPrior(llm, frame))
    assert all(abs(v) < 2e-4 for v in flat[7].values())
    with pytest.raises(ValueError, match=r"\[1, P, D\]"):
        OptionPrior(llm, torch.randn(5, llm.hidden_size))


def test_calibrated_multiple_choice_is_a_valid_test_cfg():
    from bevlm.models.detectors.test_cfg import TestConfig

    assert TestConfig.from_dict({"multiple_choice": "calibrated"}).multiple_choice == "calibrated"


def test_score_pairs_subtracts_each_baseline_pair_scored_on_the_same_frame():
    from bevlm.models.qa import score_pairs

    llm = _llm()
    torch.manual_seed(2)
    prefix = torch.randn(1, 5, llm.hidden_size)
    pairs = [("What is the moving status of object <c1,CAM_FRONT,1.0,2.0>?", "Going ahead."),
             ("What is the moving status of object <c1,CAM_FRONT,1.0,2.0>?", "Stopped.")]
    base = [("What is the moving status of object the object?", a) for _, a in pairs]
    cache = llm.prefill(prefix)
    got = score_pairs(llm, cache, pairs, [(7, "go"), (7, "stop")], baselines=base)
    want = [_reference_logprob(llm, prefix, q, a) - _reference_logprob(llm, prefix, bq, a)
            for (q, a), (bq, _) in zip(pairs, base)]
    assert list(got) == [7] and list(got[7]) == ["go", "stop"]
    assert [got[7]["go"], got[7]["stop"]] == pytest.approx(want, abs=1e-4)
    assert score_pairs(llm, cache, [], []) == {}
    with pytest.raises(ValueError, match="1 baseline pairs for 2 pairs"):
        score_pairs(llm, cache, pairs, [(7, "go"), (7, "stop")], baselines=base[:1])
