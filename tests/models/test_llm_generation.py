"""Prefix KV cache: cached greedy decoding == recompute-everything decoding."""
import torch

from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.testing import TINY_LLAMA_CONFIG
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

P = 5
MAX_NEW = 12
QUESTIONS = ["What are the important objects in the current scene?",
             "Predict the behavior of the ego vehicle.",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?"]


def _tiny_with_eos_bias() -> HFCausalLM:
    """Tiny model whose lm_head has a bias, so EOS can be made likelier."""
    return tiny_llm_with_head_bias()


def _prefix(llm: HFCausalLM, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(1, P, llm.hidden_size)


def _snapshot(cache: PrefixCache) -> list[torch.Tensor]:
    return [t.clone() for layer in cache.past_key_values.layers for t in (layer.keys, layer.values)]


def test_cached_equals_uncached_and_cache_is_not_mutated():
    llm = _tiny_with_eos_bias()
    prefix = _prefix(llm)
    eos = llm.tokenizer.eos_token_id
    # Find an EOS bias in the middle of a range where one question stops
    # early (0 < n < MAX_NEW) under the reference decoder: well away from ties.
    grid = torch.linspace(0.0, 1.0, 41).tolist()
    lengths = []
    for b in grid:
        llm.lm.lm_head.bias.data[eos] = b
        lengths.append([len(llm.generate_ids_no_cache(prefix, q, MAX_NEW)) for q in QUESTIONS])
    best = None  # (run length, grid index of the middle)
    for qi in range(len(QUESTIONS)):
        i = 0
        while i < len(grid):
            j = i
            while j + 1 < len(grid) and lengths[j + 1][qi] == lengths[i][qi]:
                j += 1
            if 0 < lengths[i][qi] < MAX_NEW and (best is None or j - i > best[0]):
                best = (j - i, (i + j) // 2)
            i = j + 1
    assert best is not None, f"no EOS bias makes any question stop early: {lengths}"
    llm.lm.lm_head.bias.data[eos] = grid[best[1]]

    cache = llm.prefill(prefix)
    before = _snapshot(cache)
    n_tokens = []
    for q in QUESTIONS + QUESTIONS[:1]:  # the repeat re-uses the same cache
        ids = llm.generate_ids(cache, q, MAX_NEW)
        assert ids == llm.generate_ids_no_cache(prefix, q, MAX_NEW)
        assert llm.answer(cache, q, MAX_NEW) == llm.answer_no_cache(prefix, q, MAX_NEW)
        assert eos not in ids
        n_tokens.append(len(ids))
    assert any(0 < n < MAX_NEW for n in n_tokens), n_tokens  # stopped at EOS
    after = _snapshot(cache)
    assert cache.past_key_values.get_seq_length() == cache.prefix_len == llm.prefix_text_len + P
    assert all(torch.equal(a, b) for a, b in zip(before, after))

    llm.lm.lm_head.bias.data.zero_()  # no EOS pressure: every question runs to the limit
    cache = llm.prefill(prefix)
    for q in QUESTIONS:
        ids = llm.generate_ids(cache, q, MAX_NEW)
        assert len(ids) == MAX_NEW
        assert ids == llm.generate_ids_no_cache(prefix, q, MAX_NEW)
        assert ids == llm.generate_ids(cache, q, MAX_NEW)  # answering twice: same result


def test_prefill_matches_training_layout():
    """The cached prefix + query gives the same first-answer logits and prefix
    hidden states as the packed training batch (same prompt layout)."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=TINY_LLAMA_CONFIG).eval()
    prefix = _prefix(llm)
    cache = llm.prefill(prefix)
    question, answer = QUESTIONS[1], "The ego vehicle is going straight."
    batch = llm.build_batch([[(QUESTIONS[0], "Yes."), (question, answer)]], num_prefix=P)
    with torch.no_grad():
        out = llm.forward_train(batch, prefix)
        logits, _ = llm.answer_logits(batch, prefix)
        first_answer = logits[len(llm.tokenizer("Yes.", add_special_tokens=False)["input_ids"]) + 1]
        query = torch.tensor([llm._query_ids(question)])
        positions = torch.arange(cache.prefix_len, cache.prefix_len + query.shape[1])[None]
        from bevlm.models.llm.cache_api import cache_kwargs
        from bevlm.models.llm.generation import fork_cache
        step = llm.lm(input_ids=query, position_ids=positions,
                      **cache_kwargs(llm.lm, fork_cache(cache.past_key_values)))
    torch.testing.assert_close(cache.hidden_prefix, out["hidden_prefix"], atol=1e-5, rtol=0)
    torch.testing.assert_close(step.logits[0, -1], first_answer, atol=1e-5, rtol=0)


def test_prefill_shapes():
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=TINY_LLAMA_CONFIG).eval()
    cache = llm.prefill(_prefix(llm))
    assert cache.hidden_prefix.shape == (1, P, llm.hidden_size)
    assert cache.prefix_len == llm.prefix_text_len + P
    assert isinstance(llm.answer(cache, QUESTIONS[0], max_new_tokens=3), str)


def test_batched_answers_equal_one_by_one():
    """Decoding all questions of a frame as one left-padded batch gives the same greedy ids
    as decoding each alone (different question lengths, EOS stops, per-row budgets)."""
    llm = _tiny_with_eos_bias()
    prefix = _prefix(llm, seed=3)
    questions = QUESTIONS + ["Yes?", "What is the moving status of object <c2,CAM_BACK,10.0,20.0>?"]
    cache = llm.prefill(prefix)
    before = _snapshot(cache)
    for bias in (0.0, 0.4, 0.8):
        llm.lm.lm_head.bias.data[llm.tokenizer.eos_token_id] = bias
        single = [llm.generate_ids(cache, q, MAX_NEW) for q in questions]
        assert llm.generate_ids_batch(cache, questions, MAX_NEW) == single
    budgets = [1, 3, 12, 0, 5]
    batched = llm.generate_ids_batch(cache, questions, budgets)
    assert batched == [llm.generate_ids(cache, q, b)[:b] for q, b in zip(questions, budgets)]
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(cache)))
    assert llm.answer_batch(cache, questions[:2], 4) == [llm.answer(cache, q, 4) for q in questions[:2]]


def test_shared_text_prefix_prefill_matches_and_is_rebuilt_when_weights_change():
    """The prompt-text KV computed once and reused gives the per-frame prefill's cache and
    answers; an in-place weight update or a new prompt rebuilds it."""
    llm = _tiny_with_eos_bias()
    frames = [_prefix(llm, seed=s) for s in (1, 2)]
    plain = [llm.prefill(p) for p in frames]
    answers = [[llm.generate_ids(c, q, MAX_NEW) for q in QUESTIONS] for c in plain]
    llm.share_text_prefix = True
    try:
        shared = [llm.prefill(p) for p in frames]
        text = llm.text_cache()
        assert llm.text_cache() is text and text.get_seq_length() == llm.prefix_text_len
        for a, b, ans in zip(plain, shared, answers):
            assert b.prefix_len == a.prefix_len
            torch.testing.assert_close(b.hidden_prefix, a.hidden_prefix, atol=1e-5, rtol=1e-5)
            for la, lb in zip(a.past_key_values.layers, b.past_key_values.layers):
                torch.testing.assert_close(lb.keys, la.keys, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(lb.values, la.values, atol=1e-5, rtol=1e-5)
            assert [llm.generate_ids(b, q, MAX_NEW) for q in QUESTIONS] == ans
        assert llm.text_cache().get_seq_length() == llm.prefix_text_len  # forks left it intact
        with torch.no_grad():
            llm.lm.model.layers[0].self_attn.k_proj.weight.mul_(1.5)
        rebuilt = llm.text_cache()
        assert rebuilt is not text
        assert not torch.allclose(rebuilt.layers[0].keys, text.layers[0].keys)
        llm.share_text_prefix = False
        ref = llm.prefill(frames[0])
        llm.share_text_prefix = True
        torch.testing.assert_close(llm.prefill(frames[0]).hidden_prefix, ref.hidden_prefix, atol=1e-5, rtol=1e-5)
    finally:
        llm.share_text_prefix = False


def test_query_groups_minimise_padding_plus_overhead():
    from bevlm.models.llm.batched_generation import query_groups

    # one long row pays its length alone; the short rows share a forward
    assert query_groups([5, 6, 120, 4], overhead=32) == [[3, 0, 1], [2]]
    # no overhead: every distinct length its own forward; a huge one: a single forward
    assert query_groups([3, 3, 7], overhead=0) in ([[0, 1], [2]], [[0], [1], [2]])
    assert query_groups([5, 6, 120, 4], overhead=1e9) == [[3, 0, 1, 2]]
    # hand-computed: lengths 2, 2, 10, overhead 4 -> {2, 2} + {10}: 4 + 4 + 4 + 10 = 22 < 4 + 30
    assert query_groups([10, 2, 2], overhead=4) == [[1, 2], [0]]
    assert query_groups([], overhead=4) == []


def test_grouped_prefill_equals_one_padded_forward():
    """Prefilling rows of similar length separately and assembling their caches leaves the state
    one padded forward leaves: the same next-token logits, the same keys / values at every
    attended slot, and the same greedy continuation afterwards."""
    from bevlm.models.llm.batched_generation import greedy_batch_from_cache, prefill_queries

    llm = _tiny_with_eos_bias()
    cache = llm.prefill(_prefix(llm, seed=5))
    questions = QUESTIONS + ["Yes?", "What is the moving status of object <c2,CAM_BACK,10.0,20.0>?"]
    queries = [llm._query_ids(q) for q in questions]
    before = _snapshot(cache)
    one = prefill_queries(llm.lm, cache, queries, llm.pad_id, torch.device("cpu"), overhead=float("inf"))
    grouped = prefill_queries(llm.lm, cache, queries, llm.pad_id, torch.device("cpu"), overhead=0)
    assert one[3] == 1 and grouped[3] > 1
    torch.testing.assert_close(grouped[0], one[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(grouped[1], one[1])
    seen = grouped[1].bool()  # [Q, C + Lmax] attended slots
    for a, b in zip(one[2].layers, grouped[2].layers):
        assert a.keys.shape == b.keys.shape
        for x, y in ((a.keys, b.keys), (a.values, b.values)):
            torch.testing.assert_close(y.permute(0, 2, 1, 3)[seen], x.permute(0, 2, 1, 3)[seen], atol=1e-5, rtol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(cache)))
    single = [llm.generate_ids(cache, q, MAX_NEW) for q in questions]
    stop = frozenset(llm.prompt.stop_ids)
    assert greedy_batch_from_cache(llm.lm, cache, queries, MAX_NEW, stop, llm.pad_id) == single
