"""End guard: hand-checked choices, and every decoder applies it identically."""
import pytest
import torch

from bevlm.inference.speculative import SelfSpeculativeDecoder
from bevlm.models.llm.generation import choose_token, guarded_choices
from bevlm.models.llm.stopping import EndGuard, RepetitionStop, build_end_guard
from bevlm.structures.qa_families import question_family
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

GUARDED = "What are the important objects in the current scene? Those objects will be considered."
QUESTIONS = [GUARDED, "Predict the behavior of the ego vehicle.", "Is it raining?", GUARDED + " Again."]
BUDGET = 24


def test_choose_token_hand_cases():
    logits = torch.tensor([0.0, 5.0, 3.0, 4.0])  # argmax 1 (a stop id), then 3, then 2
    stop = frozenset({1})
    assert choose_token(logits, stop) == 1                        # no guard: plain argmax
    assert choose_token(logits, stop, lambda: True) == 1          # the guard allows ending
    assert choose_token(logits, stop, lambda: False) == 3         # best other token
    assert choose_token(logits, frozenset({1, 3}), lambda: False) == 2
    called = []
    assert choose_token(torch.tensor([9.0, 0.0]), stop, lambda: called.append(1)) == 0
    assert not called, "the guard is consulted only when the argmax is a stop token"
    assert torch.equal(logits, torch.tensor([0.0, 5.0, 3.0, 4.0])), "the logits are not modified"
    # verify rows: the answer at row j is answer + drafts[:j]; "<c" here is token 7
    rows = torch.tensor([[0.0, 9.0, 1.0, 2.0], [0.0, 9.0, 3.0, 2.0], [0.0, 9.0, 1.0, 2.0]])
    check = lambda ids: 7 in ids  # noqa: E731
    assert guarded_choices(rows, [1, 1, 1], stop, check, [5], [6, 7]) == [3, 2, 1]
    assert guarded_choices(rows, [1, 1, 1], stop, check, [7], [6, 6]) == [1, 1, 1]


def test_guard_config():
    assert question_family(GUARDED) == "important_objects" and question_family("Is it raining?") == "other"
    guard = build_end_guard(dict(important_objects="<c"))
    assert guard == EndGuard((("important_objects", "<c"),)) and build_end_guard(None) is None
    assert guard.required_text(GUARDED) == "<c" and guard.check("Is it raining?", str) is None
    may_end = guard.check(GUARDED, lambda ids: "".join(ids))
    assert not may_end(["There is a car."]) and may_end(["There is a car. ", "<c1,CAM_FRONT,1.0,2.0>"])
    with pytest.raises(ValueError, match="unknown question families"):
        build_end_guard(dict(important_object="<c"))
    with pytest.raises(ValueError, match="answer_must_contain"):
        EndGuard((("important_objects", ""),))
    with pytest.raises(TypeError, match="answer_must_contain"):
        build_end_guard(["important_objects"])


def _reference(llm, prefix, question, budget, required, rule=None):
    """Greedy decoding written out: the whole sequence recomputed every step, a stop token passed
    over (for the best other token) while the answer's text lacks ``required``."""
    embed = llm.lm.get_input_embeddings()
    query = llm._query_ids(question)
    stops = sorted(llm.prompt.stop_ids)
    ids: list[int] = []
    while len(ids) < budget:
        x = torch.cat([llm._prefix_inputs(prefix), embed(torch.tensor([query + ids]))], dim=1)
        row = llm.lm(inputs_embeds=x, use_cache=False).logits[0, -1]
        order = row.argsort(descending=True).tolist()
        tok = order[0]
        if tok in stops and required is not None and required not in llm.decode_ids(ids):
            tok = next(t for t in order if t not in stops)
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


@pytest.mark.parametrize("rule", [None, RepetitionStop(max_period=4, min_repeats=2, min_span=2)])
@pytest.mark.parametrize("written", [False, True])
def test_every_decoder_applies_the_guard(early_stopping_llm, rule, written):
    llm, prefix, cache = early_stopping_llm
    # "<c": a required text the tiny model never writes, so the guarded answers can only end at the
    # budget or the loop rule; written: the text of a token the guarded answer writes midway, so the
    # guard is lifted there (inside a verified draft for the speculative decoders)
    required = "<c"
    if written:
        long = _reference(llm, prefix, GUARDED, BUDGET, required, rule)
        required = next(t for t in (llm.decode_ids([i]) for i in long[3:]) if t and t not in llm.decode_ids(long[:3]))
    free = [_reference(llm, prefix, q, BUDGET, None, rule) for q in QUESTIONS]
    expected = [_reference(llm, prefix, q, BUDGET, required if q.startswith(GUARDED) else None, rule)
                for q in QUESTIONS]
    assert free[1] == expected[1] and free[2] == expected[2]
    assert len(expected[0]) > len(free[0]) and len(expected[3]) > len(free[3]), "the guard changed nothing"
    try:
        llm.stop_rule, llm.end_guard = rule, build_end_guard(dict(important_objects=required))
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
