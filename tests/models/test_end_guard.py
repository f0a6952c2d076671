"""End guard: hand-checked choices, and every decoder applies it identically."""
from collections import Counter

import pytest
import torch

from bevlm.inference.speculative import SelfSpeculativeDecoder
from bevlm.models.llm.generation import choose_token, guarded_choices
from bevlm.models.llm.stopping import AnswerGuard, EndGuard, Recurrence, RepetitionStop, build_end_guard
from bevlm.structures.qa_families import question_family
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

GUARDED = "What are the important objects in the current scene? Those objects will be considered."
QUESTIONS = [GUARDED, "Predict the behavior of the ego vehicle.", "Is it raining?", GUARDED + " Again."]
BUDGET = 24


def _letters(ids):
    return "".join("abcdefghijklmnopqrstuvwxyz"[i] for i in ids)


def test_choose_token_hand_cases():
    logits = torch.tensor([0.0, 5.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])  # argmax 1 (a stop id), then 3, then 2
    stop = frozenset({1})
    text_h = AnswerGuard("h", _letters)  # "h" is token 7
    assert choose_token(logits, stop) == 1                        # no guard: plain argmax
    assert choose_token(logits, stop, text_h, [7]) == 1           # the answer holds the text: it may end
    assert choose_token(logits, stop, text_h, [5]) == 3           # best other token
    assert choose_token(logits, frozenset({1, 3}), text_h, [5]) == 2
    decoded = []
    spy = AnswerGuard("h", lambda ids: decoded.append(1) or _letters(ids))
    assert choose_token(torch.tensor([9.0, 0.0]), stop, spy, [0]) == 0
    assert not decoded, "the answer is decoded only when the argmax is a stop token (or completes a loop)"
    assert torch.equal(logits, torch.tensor([0.0, 5.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])), "logits not modified"
    # verify rows: the answer at row j is answer + drafts[:j]
    rows = torch.tensor([[0.0, 9.0, 1.0, 2.0], [0.0, 9.0, 3.0, 2.0], [0.0, 9.0, 1.0, 2.0]])
    assert guarded_choices(rows, [1, 1, 1], stop, text_h, [5], [6, 7]) == [3, 2, 1]
    assert guarded_choices(rows, [1, 1, 1], stop, text_h, [7], [6, 6]) == [1, 1, 1]


def test_loop_guard_hand_cases():
    """With ``loops``, a token that completes a loop is forbidden while the answer lacks the text."""
    loops = RepetitionStop(max_period=3, min_repeats=3, min_span=3)
    guard = AnswerGuard("h", _letters, loops)
    stop = frozenset({1})
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0])  # argmax 5, then 4, then 3
    assert choose_token(logits, stop, guard, [4, 5, 4]) == 5          # [4, 5] twice: not a loop yet
    assert choose_token(logits, stop, guard, [4, 5, 4, 5, 4]) == 4    # 5 would make three copies of [4, 5]
    assert choose_token(logits, stop, guard, [7, 4, 5, 4, 5, 4]) == 5  # the text is there: plain greedy
    assert choose_token(logits, stop, AnswerGuard("h", _letters), [4, 5, 4, 5, 4]) == 5  # no loop shape
    # the next best token can complete a loop too: 5 would make [5] x 3, then 4 [5, 5, 4] x 3; 3 is taken
    assert choose_token(logits, stop, guard, [5, 5, 4, 5, 5, 4, 5, 5]) == 3
    # a stop token below the forbidden one: still forbidden, the text is missing
    assert choose_token(torch.tensor([0.0, 4.5, 0.0, 0.0, 0.0, 5.0]), stop, guard, [5, 5]) == 0
    # once the text is there the guard forbids nothing: the loop is left to the stop rule
    assert choose_token(torch.tensor([0.0, 4.5, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0]), stop, guard, [7, 5, 5]) == 5
    rows = torch.tensor([[0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 0.0, 0.0]] * 3)
    assert guarded_choices(rows, [5, 5, 5], stop, guard, [4, 5, 4], [5, 4]) == [5, 5, 4]  # row 2: [4, 5] x 3


def test_recurrence_hand_cases():
    """A phrase's third copy anywhere in the answer is found; two copies, or copies of shorter
    phrases, are not."""
    rec = Recurrence(ngram=3, max_count=2)
    wander = [1, 2, 3, 9, 1, 2, 3, 8, 1, 2]             # [1, 2, 3] twice, apart
    assert not rec.completes(wander) and rec.completes(wander + [3])
    assert not rec.completes(wander + [4])
    assert not rec.completes([1, 2, 7, 1, 2, 8, 1, 2])  # [1, 2] three times: shorter than the phrase
    assert rec.completes([5, 5, 5, 5, 5])               # overlapping copies count: [5, 5, 5] at 0, 1, 2
    assert not rec.completes([5, 5, 5, 5])
    assert not Recurrence(ngram=3, max_count=3).completes(wander + [3])
    assert Recurrence(ngram=1, max_count=1).completes([4, 6, 4]) and not rec.completes([])
    # only the answer's last phrase is judged (checked after every token, earlier ones were judged then)
    assert not rec.completes([1, 2, 3, 1, 2, 3, 1, 2, 3, 7])
    guard = AnswerGuard("h", _letters, recurrence=rec)
    stop = frozenset({1})
    logits = torch.tensor([0.0, 1.0, 2.0, 5.0, 4.0, 0.0, 0.0, 0.0])  # argmax 3, then 4
    assert choose_token(logits, stop, guard, wander) == 4               # 3 would write [1, 2, 3] a third time
    assert choose_token(logits, stop, guard, [7] + wander) == 3         # the text is there: plain greedy
    assert choose_token(logits, stop, AnswerGuard("h", _letters), wander) == 3
    with pytest.raises(ValueError, match="answer_guard_recurrence"):
        Recurrence(ngram=0)


def test_guard_config():
    assert question_family(GUARDED) == "important_objects" and question_family("Is it raining?") == "other"
    guard = build_end_guard(dict(important_objects="<c"))
    assert guard == EndGuard((("important_objects", "<c"),)) and build_end_guard(None) is None
    assert guard.required_text(GUARDED) == "<c" and guard.check("Is it raining?", str) is None
    may_end = guard.check(GUARDED, lambda ids: "".join(ids))
    assert not may_end(["There is a car."]) and may_end(["There is a car. ", "<c1,CAM_FRONT,1.0,2.0>"])
    looped = build_end_guard(dict(important_objects="<c"), dict(max_period=24, min_repeats=3, min_span=12))
    assert looped.loops == RepetitionStop(24, 3, 12) and looped.check(GUARDED, str).loops == looped.loops
    with pytest.raises(ValueError, match="answer_guard_loops"):
        build_end_guard(None, dict(max_period=24))
    with pytest.raises(ValueError, match="answer_guard_loops"):
        build_end_guard(dict(important_objects="<c"), dict(max_period=0))
    with pytest.raises(ValueError, match="answer_guard_loops"):
        build_end_guard(dict(important_objects="<c"), dict(period=3))
    recurring = build_end_guard(dict(important_objects="<c"), None, dict(ngram=12, max_count=2))
    assert recurring.check(GUARDED, str).recurrence == Recurrence(12, 2) and recurring.loops is None
    with pytest.raises(ValueError, match="answer_guard_recurrence"):
        build_end_guard(None, None, dict(ngram=12))
    with pytest.raises(ValueError, match="answer_guard_recurrence"):
        build_end_guard(dict(important_objects="<c"), None, dict(ngram=12, count=2))
    with pytest.raises(TypeError, match="answer_guard_recurrence"):
        build_end_guard(dict(important_objects="<c"), None, [12, 2])
    with pytest.raises(ValueError, match="unknown question families"):
        build_end_guard(dict(important_object="<c"))
    with pytest.raises(ValueError, match="answer_must_contain"):
        EndGuard((("important_objects", ""),))
    with pytest.raises(TypeError, match="answer_must_contain"):
        build_end_guard(["important_objects"])


def _recurs(ids, recurrence):
    """Whether the last phrase of ``ids`` occurs more often than allowed (counted over all phrases)."""
    n = recurrence.ngram
    phrases = Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
    return len(ids) >= n and phrases[tuple(ids[-n:])] > recurrence.max_count


def _reference(llm, prefix, question, budget, required, rule=None, loops=None, recurrence=None):
    """Greedy decoding written out: the whole sequence recomputed every step, a stop token (and with
    ``loops`` a token that completes such a loop, with ``recurrence`` one that writes a phrase once
    too often) passed over for the best other token while the answer's text lacks ``required``."""
    embed = llm.lm.get_input_embeddings()
    query = llm._query_ids(question)
    stops = sorted(llm.prompt.stop_ids)
    ids: list[int] = []
    while len(ids) < budget:
        x = torch.cat([llm._prefix_inputs(prefix), embed(torch.tensor([query + ids]))], dim=1)
        row = llm.lm(inputs_embeds=x, use_cache=False).logits[0, -1]
        order = row.argsort(descending=True).tolist()
        tok = order[0]
        if required is not None and required not in llm.decode_ids(ids):
            tok = next(t for t in order if t not in stops
                       and (loops is None or loops.truncate_to(ids + [t]) is None)
                       and (recurrence is None or not _recurs(ids + [t], recurrence)))
        if tok in stops:
            break
        ids.append(tok)
        if rule is not None and (cut := rule.truncate_to(ids)) is not None:
            return ids[:cut]
    return ids


@pytest.fixture(scope="module")
def early_stopping_llm():
    """A tiny Llama with EOS pushed up: its greedy answers end after a few tokens."""
    llm = tiny_llm_with_head_bias(num_hidden_layers=2)
    eos = int(llm.tokenizer.eos_token_id)
    torch.manual_seed(3)
    prefix = torch.randn(1, 5, llm.hidden_size)
    cache = llm.prefill(prefix)
    with torch.no_grad():
        base = [llm.lm(inputs_embeds=torch.cat([llm._prefix_inputs(prefix), llm.lm.get_input_embeddings()(
            torch.tensor([llm._query_ids(q)]))], 1)).logits[0, -1] for q in QUESTIONS]
        gap = max(float(b.max() - b[eos]) for b in base)
        llm.lm.lm_head.bias[eos] = gap + 0.05  # the first choice is EOS or close to it
    return llm, prefix, cache


LOOPS = RepetitionStop(max_period=6, min_repeats=2, min_span=2)
RECUR = Recurrence(ngram=2, max_count=1)


@pytest.fixture(scope="module")
def looping_llm():
    """A tiny Llama with three tokens pushed up (EOS left alone): its answers repeat blocks of them,
    so the loop guard decides tokens that are not stop tokens."""
    llm = tiny_llm_with_head_bias(num_hidden_layers=2)
    torch.manual_seed(3)
    prefix = torch.randn(1, 5, llm.hidden_size)
    with torch.no_grad():
        llm.lm.lm_head.bias[[40, 41, 42]] += 1.5
    return llm, prefix, llm.prefill(prefix)


@pytest.mark.parametrize("rule", [None, RepetitionStop(max_period=4, min_repeats=3, min_span=3)])
@pytest.mark.parametrize("written", [False, True])
@pytest.mark.parametrize("loops, recurrence", [(None, None), (LOOPS, None), (None, RECUR), (LOOPS, RECUR)])
def test_every_decoder_applies_the_guard(request, rule, written, loops, recurrence):
    plain_guard = loops is None and recurrence is None
    llm, prefix, cache = request.getfixturevalue("early_stopping_llm" if plain_guard else "looping_llm")
    # "<c": a required text the tiny model never writes, so the guarded answers can only end at the
    # budget or the loop rule; written: the text of a token the guarded answer writes midway, so the
    # guard is lifted there (inside a verified draft for the speculative decoders)
    required = "<c"
    if written:
        long = _reference(llm, prefix, GUARDED, BUDGET, required, rule, loops, recurrence)
        required = next(t for t in (llm.decode_ids([i]) for i in long[3:]) if t and t not in llm.decode_ids(long[:3]))
    free = [_reference(llm, prefix, q, BUDGET, None, rule) for q in QUESTIONS]
    expected = [_reference(llm, prefix, q, BUDGET, required if q.startswith(GUARDED) else None, rule, loops,
                           recurrence) for q in QUESTIONS]
    assert free[1] == expected[1] and free[2] == expected[2]
    if plain_guard:
        assert len(expected[0]) > len(free[0]) and len(expected[3]) > len(free[3]), "the guard changed nothing"
    elif not written:  # the loop shapes change the guarded answers, and none is left
        for dropped, partial in (("loops", (None, recurrence)), ("recurrence", (loops, None))):
            if partial != (loops, recurrence):  # each shape set changes the answers against the guard without it
                weaker = [_reference(llm, prefix, q, BUDGET, required, rule, *partial) for q in (QUESTIONS[0], QUESTIONS[3])]
                assert weaker != [expected[0], expected[3]], f"the guard's {dropped} changed nothing"
        guarded = (expected[0], expected[3])
        assert loops is None or all(loops.truncate_to(e[:n]) is None for e in guarded for n in range(len(e) + 1))
        assert recurrence is None or all(not _recurs(e[:n], recurrence) for e in guarded for n in range(len(e) + 1))
    try:
        llm.stop_rule = rule
        llm.end_guard = build_end_guard(dict(important_objects=required), None if loops is None else vars(loops),
                                        None if recurrence is None else vars(recurrence))
        with torch.no_grad():
            assert [llm.generate_ids(cache, q, BUDGET) for q in QUESTIONS] == expected
            assert [llm.generate_ids_no_cache(prefix, q, BUDGET) for q in QUESTIONS] == expected
            assert llm.generate_ids_batch(cache, QUESTIONS, BUDGET) == expected
            for kw in (dict(use_ngram=True, use_layer_skip=False), dict(use_ngram=True, use_layer_skip=True)):
                dec = SelfSpeculativeDecoder(llm, [1], draft_len=5, **kw)
                assert [dec.generate_ids(cache, q, BUDGET) for q in QUESTIONS] == expected
                assert dec.generate_ids_batch(cache, QUESTIONS, BUDGET) == expected  # batched drafting
    finally:
        llm.stop_rule, llm.end_guard = None, None
