"""QA-round policies on the real DriveLM sample, training blocks, budgets, and answering a frame."""
import math

import pytest
import torch

from bevlm.datasets.drivelm_io import flatten_qa, iter_frames, load_drivelm
from bevlm.models.qa import GreedySequentialDecoder
from bevlm.models.qa.format import PromptTemplate, format_round_answer, parse_round_answer
from bevlm.models.qa.policy import (STAGE_ROUNDS, QAPolicy, answer_frame, apply_system_prompt, blocks_for_policy,
                                    family_token_budget, round_overhead_tokens, round_token_budget)
from bevlm.structures import QAItem
from bevlm.structures.qa_families import classify_question
from tests.paths import DRIVELM_SAMPLE_JSON

torch.set_num_threads(1)

@pytest.fixture(scope="module")
def frames() -> list[list[QAItem]]:
    """Every frame of the DriveLM sample as QAItems (official order and indices)."""
    out = []
    for _, _, frame, _ in iter_frames(load_drivelm(DRIVELM_SAMPLE_JSON)):
        out.append([QAItem(q["Q"], q["A"], q["stage"], q["index"], classify_question(q["Q"], q["stage"]))
                    for q in flatten_qa(frame)])
    assert len(out) == 9
    return out


def _check_partition(rounds, items):
    flat = [qa.index for r in rounds for qa in r]
    assert sorted(flat) == sorted(qa.index for qa in items)  # every question exactly once
    assert len(set(flat)) == len(flat)
    assert all(r for r in rounds)
    by_index = {qa.index: qa for qa in items}
    assert all(by_index[qa.index] is qa for r in rounds for qa in r)  # official indices preserved


def test_round_counts_on_real_frames(frames):
    for items in frames:
        full, three, single = (QAPolicy(m).rounds(items) for m in ("full", "three_rounds", "single"))
        assert len(full) == len(items) and all(len(r) == 1 for r in full)
        assert [r[0].index for r in full] == [qa.index for qa in items]
        assert len(three) == 3  # every sample frame has all of perception / prediction / planning
        assert len(single) == 1 and [qa.index for qa in single[0]] == [qa.index for qa in items]
        for rounds in (full, three, single):
            _check_partition(rounds, items)
        # graph order: perception -> prediction -> planning + behavior, index order inside
        assert [sorted({qa.stage for qa in r}) for r in three] == \
            [["perception"], ["prediction"], ["behavior", "planning"]]
        for r in three:
            assert [qa.index for qa in r] == sorted(qa.index for qa in r)


def test_max_questions_per_round_chunking(frames):
    items = frames[0]
    for m in (1, 7, 30, 1000):
        three = QAPolicy("three_rounds", max_questions_per_round=m).rounds(items)
        single = QAPolicy("single", max_questions_per_round=m).rounds(items)
        sizes = [sum(qa.stage in g for qa in items) for g in STAGE_ROUNDS]
        assert len(three) == sum(math.ceil(s / m) for s in sizes)
        assert len(single) == math.ceil(len(items) / m)
        assert max(len(r) for r in three + single) <= m
        _check_partition(three, items)
        _check_partition(single, items)
    assert len(QAPolicy("full", max_questions_per_round=3).rounds(items)) == len(items)


def test_three_rounds_handles_missing_stages_and_bad_input(frames):
    items = [qa for qa in frames[0] if qa.stage in ("perception", "behavior")]
    rounds = QAPolicy("three_rounds").rounds(items)
    assert [len(r) for r in rounds] == [len(items) - 1, 1]
    assert QAPolicy("single").rounds([]) == []
    with pytest.raises(ValueError, match="stage"):
        QAPolicy("three_rounds").rounds([QAItem("q", "a", "planing", 0)])
    with pytest.raises(ValueError, match="mode"):
        QAPolicy("two_rounds")
    with pytest.raises(ValueError, match="max_questions_per_round"):
        QAPolicy("single", max_questions_per_round=0)


def test_blocks_for_policy(frames):
    items = frames[4]
    assert blocks_for_policy(items, QAPolicy("full")) == [(qa.question, qa.answer) for qa in items]
    chunk = items[::12]  # a strided training chunk as BEVDriveDataset builds it
    assert blocks_for_policy(chunk, QAPolicy()) == [(qa.question, qa.answer) for qa in chunk]
    for policy in (QAPolicy("three_rounds"), QAPolicy("single"), QAPolicy("single", max_questions_per_round=5)):
        blocks = blocks_for_policy(items, policy)
        rounds = policy.rounds(items)
        assert len(blocks) == len(rounds)
        for (q_text, a_text), r in zip(blocks, rounds):
            assert q_text.count("\n") == len(r) - 1 and q_text.startswith("Q1: ")
            # the target answer text parses back to the ground-truth answers
            assert parse_round_answer(a_text, len(r)) == [qa.answer for qa in r]
            assert policy.split_answers(r, a_text) == [qa.answer for qa in r]
    templ = QAPolicy("full", template=dict(question_prefix="Q: "))
    assert blocks_for_policy(items[:2], templ) == [("Q: " + qa.question, qa.answer) for qa in items[:2]]


def test_budgets(frames):
    overrides = dict(important_objects=160, notice_order=256)
    assert family_token_budget("are_there", 32, overrides) == 32
    assert family_token_budget("important_objects", 32, overrides) == 160
    with pytest.raises(ValueError, match="family_max_new_tokens"):
        family_token_budget("x", 0)
    items = frames[0]
    for mode in ("full", "three_rounds", "single"):
        policy = QAPolicy(mode)
        for r in policy.rounds(items):
            per_q = sum(family_token_budget(qa.family, 32, overrides) for qa in r)
            b = round_token_budget(r, policy, 32, overrides)
            assert b == per_q + (0 if mode == "full" else 4 * len(r))

    def encode(text):  # one token per character
        return list(range(len(text)))

    assert round_overhead_tokens(encode, 3) == len("A1:\nA2:\nA3:") + 3
    assert round_overhead_tokens(encode, 0) == 0
    r = QAPolicy("single").rounds(items)[0]
    assert round_token_budget(r, QAPolicy("single"), 10, None, encode) == 10 * len(r) + \
        len(format_round_answer([""] * len(r))) + len(r)


def test_postprocess_is_opt_in():
    qa = QAItem("Are there cars to the front of the ego car?", "Yes.", "perception", 0, "are_there")
    assert QAPolicy().split_answers([qa], "Yes. Yes. No") == ["Yes. Yes. No"]
    trimmed = QAPolicy("single", trim_one_sentence=True)
    assert trimmed.split_answers([qa, qa], "A1: Yes. Yes.\nA2: No. but") == ["Yes.", "No."]
    assert QAPolicy(stop_strings=["\n"]).split_answers([qa], "No.\nA2: x") == ["No."]


# --------------------------------------------------------------------------- with the tiny LLM
@pytest.fixture(scope="module")
def tiny_llm():
    from bevlm.models.llm import HFCausalLM
    from bevlm.testing import TINY_LLAMA_CONFIG

    torch.manual_seed(0)
    return HFCausalLM(tiny_config=TINY_LLAMA_CONFIG).eval()


def test_answer_frame_full_equals_todays_decoding(tiny_llm, frames):
    items = frames[0][::9]  # 9 questions of all stages
    torch.manual_seed(1)
    cache = tiny_llm.prefill(torch.randn(1, 4, tiny_llm.hidden_size))
    overrides = {"important_objects": 7}
    out = answer_frame(tiny_llm, cache, items, QAPolicy("full"), 5, overrides)
    budgets = [family_token_budget(qa.family, 5, overrides) for qa in items]
    ids = tiny_llm.generate_ids_batch(cache, [qa.question for qa in items], budgets)
    assert out.answers == {qa.index: tiny_llm.decode_ids(i) for qa, i in zip(items, ids)}
    assert out.rounds == len(items) and out.tokens == sum(len(i) + 1 for i in ids)


def test_answer_frame_rounds_batch_equals_sequential(tiny_llm, frames):
    items = frames[1][::6]
    torch.manual_seed(2)
    cache = tiny_llm.prefill(torch.randn(1, 4, tiny_llm.hidden_size))
    policy = QAPolicy("three_rounds", max_questions_per_round=3)
    a = answer_frame(tiny_llm, cache, items, policy, 2)
    b = answer_frame(tiny_llm, cache, items, policy, 2, decoder=GreedySequentialDecoder(tiny_llm))
    assert a.answers == b.answers and a.raw == b.raw and a.tokens == b.tokens
    assert sorted(a.answers) == sorted(qa.index for qa in items)
    assert a.rounds == len(policy.rounds(items)) == len(a.raw)
    for r, text in zip(policy.rounds(items), a.raw):
        assert [a.answers[qa.index] for qa in r] == parse_round_answer(text, len(r))
    assert answer_frame(tiny_llm, cache, [], policy, 2).answers == {}


def test_apply_system_prompt(tiny_llm):
    before = tiny_llm.prompt
    apply_system_prompt(tiny_llm, PromptTemplate())
    assert tiny_llm.prompt is before  # None = keep the wrapper's own system prompt
    try:
        apply_system_prompt(tiny_llm, PromptTemplate(system="Drive safely."))
        assert "Drive safely." in tiny_llm.layout.prefix_text
        assert tiny_llm.prompt.prefix_ids != before.prefix_ids
        assert tiny_llm.prompt.query_suffix_ids == before.query_suffix_ids
    finally:
        apply_system_prompt(tiny_llm, PromptTemplate(system="You are a driving assistant. Answer about "
                                                            "the scene seen in the BEV tokens."))
    assert tiny_llm.prompt == before
