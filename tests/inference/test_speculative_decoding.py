"""Self-speculative decoding: greedy-exact output, cache hygiene, drafter pieces."""
import pytest
import torch

from bevlm.inference.speculative import (LayerSkipModel, NgramDatastore, SelfSpeculativeDecoder, causal_mask,
                                         crop_cache, ngram_propose)
from bevlm.inference.speculative.ngram import question_key
from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.models.llm.batched_generation import query_groups
from bevlm.models.llm.cache_api import cache_kwargs
from bevlm.models.llm.generation import fork_cache
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

P = 5
MAX_NEW = 16
EOS_BIAS = 3.0  # with seed 0 / init 0.2: some answers stop at EOS, others run to MAX_NEW
QUESTIONS = ["What are the important objects in the current scene?",
             "Predict the behavior of the ego vehicle.",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?",
             "Yes?"]


def _tiny(num_layers: int = 4, init: float = 0.2) -> HFCausalLM:
    """A 4-layer tiny Llama with an lm_head bias (to push EOS) and a larger init,
    so the greedy answers vary and skipping layers changes the argmax."""
    return tiny_llm_with_head_bias(num_hidden_layers=num_layers, initializer_range=init)


@pytest.fixture(scope="module")
def llm_and_cache():
    llm = _tiny()
    torch.manual_seed(1)
    cache = llm.prefill(torch.randn(1, P, llm.hidden_size))
    return llm, cache


def _snapshot(cache) -> list[torch.Tensor]:
    return [t.clone() for layer in cache.past_key_values.layers for t in (layer.keys, layer.values)]


MODES = {"layer_skip": dict(use_ngram=False, use_layer_skip=True),
         "ngram": dict(use_ngram=True, use_layer_skip=False),
         "both": dict(use_ngram=True, use_layer_skip=True)}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("draft_len", [1, 3, 6])
def test_output_equals_plain_greedy(llm_and_cache, mode, draft_len):
    llm, cache = llm_and_cache
    eos = llm.tokenizer.eos_token_id
    before = _snapshot(cache)
    lengths = []
    decoders = [SelfSpeculativeDecoder(llm, skip, draft_len=draft_len, **MODES[mode]) for skip in ([2], [1, 3])]
    try:
        for bias in (0.0, EOS_BIAS):
            llm.lm.lm_head.bias.data[eos] = bias
            for q in QUESTIONS:
                ref = llm.generate_ids(cache, q, MAX_NEW)
                lengths.append(len(ref))
                for dec in decoders:
                    assert dec.generate_ids(cache, q, MAX_NEW) == ref, (mode, draft_len, dec.skip_layers, q)
    finally:
        llm.lm.lm_head.bias.data[eos] = 0.0
    assert MAX_NEW in lengths and any(0 < n < MAX_NEW for n in lengths), lengths  # budget and EOS stops
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(cache)))     # prefix cache untouched
    assert cache.past_key_values.get_seq_length() == cache.prefix_len
    for dec in decoders:
        s = dec.stats
        assert s.generated == sum(lengths)
        assert s.accepted <= s.drafted and s.full_forwards <= s.generated + 2 * len(QUESTIONS)
        if mode != "ngram":
            assert s.skip_drafted > 0 and s.draft_forwards == s.skip_drafted
    if mode == "layer_skip" and draft_len > 1:
        # Drafts are partly accepted and partly rejected: both cache-crop paths ran.
        total = sum(d.stats.accepted for d in decoders), sum(d.stats.drafted for d in decoders)
        assert 0 < total[0] < total[1], total


@pytest.mark.parametrize("budget", [0, 1, 2, 5])
def test_small_budgets(llm_and_cache, budget):
    llm, cache = llm_and_cache
    dec = SelfSpeculativeDecoder(llm, [2], draft_len=4)
    for q in QUESTIONS:
        out = dec.generate_ids(cache, q, budget)
        assert out == llm.generate_ids(cache, q, budget) and len(out) == budget
    assert dec.answer(cache, QUESTIONS[0], budget) == llm.answer(cache, QUESTIONS[0], budget)


def test_skip_nothing_accepts_everything(llm_and_cache):
    llm, cache = llm_and_cache
    dec = SelfSpeculativeDecoder(llm, [], draft_len=4, use_ngram=False)
    for q in QUESTIONS:
        assert dec.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(cache, q, MAX_NEW)
    s = dec.stats
    assert s.drafted > 0 and s.accepted == s.drafted and s.acceptance == 1.0
    # 16 tokens: 1 from the query forward, then 5 per verify (4 drafts + 1 bonus) x 3 verifies.
    assert s.full_forwards == len(QUESTIONS) * 4


def test_previous_answer_as_context_is_copied_by_ngram(llm_and_cache):
    """context_ids holding the same question + answer: n-gram lookup proposes the answer."""
    llm, cache = llm_and_cache
    q = QUESTIONS[2]
    ref = llm.generate_ids(cache, q, MAX_NEW)
    dec = SelfSpeculativeDecoder(llm, None, draft_len=4, use_layer_skip=False, ngram_draft_len=8)
    out = dec.generate_ids(cache, q, MAX_NEW, context_ids=llm._query_ids(q) + ref)
    assert out == ref
    assert dec.stats.ngram_accepted >= len(ref) - 3
    assert dec.stats.full_forwards <= 4  # query forward + ceil(15 / 9) verifies (+1 for a first miss)


def test_repetitive_prompt_gives_ngram_acceptance():
    """A low-init tiny model loops on repetitive input; prompt lookup then drafts correctly."""
    llm = _tiny(init=0.1)
    torch.manual_seed(1)
    cache = llm.prefill(torch.randn(1, P, llm.hidden_size))
    q = "<c1,CAM_FRONT,712.5,510.0> <c1,CAM_FRONT,712.5,510.0> <c1,CAM_FRONT,712.5,510.0>"
    dec = SelfSpeculativeDecoder(llm, [1, 2], draft_len=3)
    assert dec.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(cache, q, MAX_NEW)
    assert dec.stats.ngram_accepted > 0
    assert dec.stats.full_forwards < MAX_NEW


def test_layer_loop_matches_full_model(llm_and_cache):
    """Skipping nothing, the hand-run layer loop (rope, causal mask, cache) equals the HF forward."""
    llm, cache = llm_and_cache
    ids = torch.tensor([llm._query_ids(QUESTIONS[0])])  # [1, L]
    positions = torch.arange(cache.prefix_len, cache.prefix_len + ids.shape[1])[None]
    with torch.no_grad():
        ref = llm.lm(input_ids=ids, position_ids=positions,
                     **cache_kwargs(llm.lm, fork_cache(cache.past_key_values))).logits
        past = fork_cache(cache.past_key_values)
        got = LayerSkipModel(llm.lm, []).logits(ids, past, cache.prefix_len)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert past.get_seq_length() == cache.prefix_len + ids.shape[1]


def test_crop_cache_handles_ragged_layers(llm_and_cache):
    llm, cache = llm_and_cache
    past = fork_cache(cache.past_key_values)
    n = cache.prefix_len
    drafter = LayerSkipModel(llm.lm, [1, 3])
    drafter.logits(torch.tensor([[5, 6, 7]]), past, n)  # layers 0 and 2 grow by 3, 1 and 3 do not
    assert [layer.get_seq_length() for layer in past.layers] == [n + 3, n, n + 3, n]
    crop_cache(past, n + 1)
    assert [layer.get_seq_length() for layer in past.layers] == [n + 1, n, n + 1, n]
    crop_cache(past, n)
    for a, b in zip(_snapshot(cache), [t for layer in past.layers for t in (layer.keys, layer.values)]):
        assert torch.equal(a, b)


def test_layer_skip_validation_and_cost(llm_and_cache):
    llm, _ = llm_and_cache
    for bad in ([0], [4], [-1], [2, 2]):
        with pytest.raises(ValueError):
            LayerSkipModel(llm.lm, bad)
    ratios = [LayerSkipModel(llm.lm, s).cost_ratio() for s in ([], [1], [1, 2], [1, 2, 3])]
    assert ratios[0] == 1.0 and all(a > b for a, b in zip(ratios, ratios[1:])) and ratios[-1] > 0
    with pytest.raises(ValueError):
        SelfSpeculativeDecoder(llm, [1], draft_len=0)


def test_causal_mask():
    assert causal_mask(4, 1, torch.float32, torch.device("cpu")) is None
    mask = causal_mask(2, 3, torch.float32, torch.device("cpu"))[0, 0]  # [3, 5]
    allowed = (mask == 0).int().tolist()
    assert allowed == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_ngram_propose():
    seq = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    # Longest suffix match: "2 3" (3-gram "5 2 3" never occurred); latest earlier one is at 5.
    assert ngram_propose(seq, 3, 1, 4) == [7, 8, 5, 2]
    assert ngram_propose(seq, 3, 1, 1) == [7]
    assert ngram_propose([4, 5, 6], 3, 1, 4) == []       # no earlier occurrence
    assert ngram_propose([1, 2, 1, 2], 2, 2, 4) == [1, 2]  # 2-gram "1 2" at 0 -> continuation "1 2"
    assert ngram_propose([7, 1, 2, 3, 1], 3, 2, 4) == []   # only a 1-gram would match
    assert ngram_propose([7, 1, 2, 3, 1], 3, 1, 4) == [2, 3, 1]
    with pytest.raises(ValueError):
        ngram_propose(seq, 2, 3, 4)


def test_position_ids_ahead_of_cache_entries(llm_and_cache):
    """A pruned prefix cache (FastV) keeps fewer KV entries than positions: still greedy-exact."""
    llm, cache = llm_and_cache
    pruned_like = PrefixCache(past_key_values=cache.past_key_values, prefix_len=cache.prefix_len + 7,
                              hidden_prefix=cache.hidden_prefix)
    for skip, use_ngram in (([2], False), ([1, 3], True)):
        dec = SelfSpeculativeDecoder(llm, skip, draft_len=3, use_ngram=use_ngram)
        for q in QUESTIONS[:2]:
            assert dec.generate_ids(pruned_like, q, MAX_NEW) == llm.generate_ids(pruned_like, q, MAX_NEW)
        assert dec.stats.drafted > 0


def test_ngram_datastore_hand_counted():
    B = NgramDatastore.BEGIN
    store = NgramDatastore([[5, 6, 7], [5, 6, 8], [5, 6, 7], [9, 6, 8]], max_ngram=2, min_ngram=1,
                           min_share=0.0, end_id=0)
    # after "5 6": 7 twice, 8 once -> 7; the 2-gram wins over the 1-gram "6" (7: 2, 8: 2)
    assert store.next_token([5, 6]) == 7
    assert store.next_token([9, 6]) == 8
    assert store.propose([B], 5) == [5, 6, 7, 0]          # chained, stops after the end id
    assert store.propose([B], 5, stop_ids={0}) == [5, 6, 7, 0]
    assert store.propose([B], 2) == [5, 6]
    assert store.propose([42], 3) == []                   # unknown context: no draft
    unsure = NgramDatastore([[1, 2], [1, 3], [1, 4]], max_ngram=2, min_ngram=1, min_share=0.5)
    assert unsure.next_token([B, 1]) is None              # best successor holds 1/3 < 0.5
    assert unsure.propose([B], 3) == [1]
    keyed = NgramDatastore([[1, 2], [3, 4], [3, 4]], max_ngram=2, min_ngram=1, min_share=0.0,
                           keys=["q-a", "q-b", "q-b"])
    assert keyed.propose([B], 2) == [3, 4]               # no key: the most frequent start overall
    assert keyed.propose([B], 2, key="q-a") == [1, 2]    # the question's template decides
    assert keyed.propose([B], 2, key="unseen") == [3, 4]  # unknown key falls back to BEGIN
    with pytest.raises(ValueError):
        NgramDatastore([[1]], keys=["a", "b"])
    with pytest.raises(ValueError):
        NgramDatastore([], max_ngram=1, min_ngram=2)
    with pytest.raises(ValueError):
        NgramDatastore([], min_share=1.5)


def test_question_key():
    assert question_key("What is the moving status of object <c1,CAM_FRONT,160.3,92.1>?") == \
        question_key(" What is the moving status of object <c4,CAM_BACK,3.0,9.5>?") == \
        "What is the moving status of object <c>?"
    assert question_key("Is it 12 m away?") == "Is it # m away?"


def test_datastore_drafts_are_greedy_exact(llm_and_cache):
    """A datastore of the model's own greedy answers (plus noise) drafts them; output stays exact."""
    llm, cache = llm_and_cache
    eos = llm.tokenizer.eos_token_id
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    noise = [[(t * 7 + 3) % 200 for t in r] for r in refs]   # wrong drafts too: rejections happen
    store = NgramDatastore(refs + noise + noise, max_ngram=3, min_ngram=1, min_share=0.0, end_id=eos,
                           keys=[question_key(q) for q in QUESTIONS] * 3)
    dec = SelfSpeculativeDecoder(llm, [2], draft_len=3, use_ngram=False, datastore=store, store_draft_len=6)
    for q, ref in zip(QUESTIONS, refs):
        assert dec.generate_ids(cache, q, MAX_NEW) == ref
    s = dec.stats
    assert s.store_drafted > 0 and 0 < s.store_accepted <= s.store_drafted
    assert s.full_forwards < s.generated  # the datastore saved full forwards


@pytest.mark.parametrize("max_draft_len", [1, 5, 24])
def test_chained_drafts_are_greedy_exact_and_longer(llm_and_cache, max_draft_len):
    """Chaining lookup and datastore proposals on the growing draft keeps the output greedy and
    drafts at most max_draft_len tokens per verify forward."""
    llm, cache = llm_and_cache
    eos = llm.tokenizer.eos_token_id
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    noise = [[(t * 7 + 3) % 200 for t in r] for r in refs]
    store = NgramDatastore(refs[:2] + noise, max_ngram=3, min_ngram=1, min_share=0.0, end_id=eos,
                           keys=[question_key(q) for q in QUESTIONS[:2]] + [question_key(q) for q in QUESTIONS])
    kw = dict(use_ngram=True, use_layer_skip=False, ngram_min_n=1, ngram_draft_len=3, datastore=store,
              store_draft_len=3)
    plain = SelfSpeculativeDecoder(llm, [], **kw)
    chained = SelfSpeculativeDecoder(llm, [], chain_drafts=True, max_draft_len=max_draft_len, **kw)
    context = refs[3]  # an earlier answer of the frame, for prompt lookup
    for q, ref in zip(QUESTIONS, refs):
        assert chained.generate_ids(cache, q, MAX_NEW, context_ids=context) == ref
        assert plain.generate_ids(cache, q, MAX_NEW, context_ids=context) == ref
    s = chained.stats
    assert s.drafted <= max_draft_len * (s.full_forwards - len(QUESTIONS))
    if max_draft_len == 24:
        assert s.drafted > plain.stats.drafted and s.full_forwards <= plain.stats.full_forwards
    with pytest.raises(ValueError, match="max_draft_len"):
        SelfSpeculativeDecoder(llm, [], chain_drafts=True, max_draft_len=-1)


@pytest.mark.parametrize("chain", [False, True])
def test_batched_speculative_equals_one_by_one_greedy(llm_and_cache, chain):
    """All questions of a frame drafted and verified as one batch (rows accept different numbers
    of drafts; rejected entries are masked, not cropped) give each question's plain greedy ids,
    at EOS stops, budget stops and per-row budgets."""
    llm, cache = llm_and_cache
    eos = llm.tokenizer.eos_token_id
    questions = QUESTIONS + ["What is the moving status of object <c2,CAM_BACK,10.0,20.0>?"]
    before = _snapshot(cache)
    try:
        for bias in (0.0, EOS_BIAS):
            llm.lm.lm_head.bias.data[eos] = bias
            refs = [llm.generate_ids(cache, q, MAX_NEW) for q in questions]
            noise = [[(t * 7 + 3) % 200 for t in r] for r in refs]
            store = NgramDatastore(refs[:3] + noise, max_ngram=3, min_ngram=1, min_share=0.0, end_id=eos,
                                   keys=[question_key(q) for q in questions[:3]] + [question_key(q) for q in questions])
            dec = SelfSpeculativeDecoder(llm, [], use_ngram=True, use_layer_skip=False, ngram_min_n=1,
                                         ngram_draft_len=3, datastore=store, store_draft_len=4, chain_drafts=chain,
                                         batched=True)
            assert dec.generate_ids_batch(cache, questions, MAX_NEW) == refs
            s = dec.stats
            assert s.generated == sum(map(len, refs)) and 0 < s.accepted < s.drafted
            # fewer batched decoding forwards than the longest answer (after the grouped query prefill)
            prefills = len(query_groups([len(llm._query_ids(q)) for q in questions]))
            assert s.full_forwards - prefills < max(map(len, refs))
            budgets = [1, 3, MAX_NEW, 0, 5]
            assert dec.generate_ids_batch(cache, questions, budgets) == [r[:b] for r, b in zip(refs, budgets)]
    finally:
        llm.lm.lm_head.bias.data[eos] = 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(cache)))
    assert dec.generate_ids_batch(cache, [], MAX_NEW) == []


@pytest.mark.parametrize("batched", [False, True])
def test_prefix_text_lookup_drafts_from_the_cache_text_and_stays_greedy_exact(llm_and_cache, batched):
    """The text a prefix holds as embeddings (PrefixCache.lookup_ids: the detections line) is searched by
    prompt lookup: a line holding the answers makes most of them drafted and accepted, the answers are
    the plain greedy ones, and lookup_prefix_text=False or no line gives the decoder of before."""
    from dataclasses import replace

    llm, cache = llm_and_cache
    questions = QUESTIONS[:3]
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in questions]
    line = [t for r in refs for t in r + [7, 8]]  # a "line" that repeats each answer
    with_line = replace(cache, lookup_ids=line)
    stats = {}
    for name, c, on in (("line", with_line, True), ("off", with_line, False), ("none", cache, True)):
        dec = SelfSpeculativeDecoder(llm, [], use_ngram=True, use_layer_skip=False, ngram_min_n=1,
                                     ngram_draft_len=8, batched=batched, lookup_prefix_text=on)
        if batched:
            out = dec.generate_ids_batch(c, questions, MAX_NEW)
        else:
            out = [dec.generate_ids(c, q, MAX_NEW) for q in questions]
        assert out == refs, name
        stats[name] = dec.stats
    assert stats["line"].ngram_accepted > stats["none"].ngram_accepted
    assert stats["line"].full_forwards < stats["none"].full_forwards
    assert stats["off"].as_dict() == stats["none"].as_dict()  # switched off: the line is not read


def test_perception_line_ids_are_the_padded_ids_without_padding():
    """The ids the decoder looks up (sample.perception_ids) are the start of the embedded ids."""
    from bevlm.models.heads.perception_text import PerceptionText

    llm = _tiny()
    pt = PerceptionText(score_thr=0.0, max_objects=3, num_tokens=48)
    objs = [("car", 9.0, "CAM_FRONT", 119.0, 106.1), ("truck", 20.0, "CAM_BACK", 30.5, 80.0)]
    line, padded = pt.line_ids(objs, llm.tokenizer), pt.token_ids(objs, llm.tokenizer)
    assert 0 < len(line) <= 48 and len(padded) == 48 and padded[:len(line)] == line
    # the line with as many objects as fit (the tiny tokenizer fits one of the two in 48 tokens)
    fitting = [k for k in range(len(objs) + 1) if len(llm.tokenizer(pt.describe(objs[:k]))["input_ids"]) <= 48]
    assert llm.tokenizer.decode(line) == pt.describe(objs[:max(fitting)])


def _is_concat_of_prefixes(seq: list, refs: list) -> bool:
    """Whether ``seq`` is ``refs[0][:a] + refs[1][:b] + ...`` for some lengths."""
    if not refs:
        return not seq
    return any(seq[:k] == refs[0][:k] and _is_concat_of_prefixes(seq[k:], refs[1:])
               for k in range(min(len(seq), len(refs[0])) + 1))


def test_batched_lookup_over_the_other_rows_answers_is_greedy_exact(llm_and_cache):
    """With lookup_other_answers, each row's lookup history holds the other rows' answers decoded so
    far (before its own question and answer); without it, only the shared context and its own. Every
    row gets its greedy ids either way."""
    llm, cache = llm_and_cache
    questions = QUESTIONS[:3]
    queries = [llm._query_ids(q) for q in questions]
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in questions]
    for on in (True, False):
        dec = SelfSpeculativeDecoder(llm, [], use_ngram=True, use_layer_skip=False, ngram_min_n=1,
                                     ngram_draft_len=8, batched=True, lookup_other_answers=on)
        seen, draft = [], dec.model_free_draft
        dec.model_free_draft = lambda history, limit, answer, key: seen.append((list(history), list(answer))) or draft(
            history, limit, answer, key)
        assert dec.generate_ids_batch(cache, questions, MAX_NEW) == refs
        shared = [t for q in queries for t in q]
        others_lens = []
        for history, answer in seen:
            r = next(k for k, ref in enumerate(refs) if ref[:len(answer)] == answer
                     and history[len(history) - len(answer) - len(queries[k]):] == queries[k] + answer)
            middle = history[len(shared):len(history) - len(answer) - len(queries[r])]
            assert history[:len(shared)] == shared
            others_lens.append(len(middle))
            # the middle is the other rows' answers so far: prefixes of their greedy ids, in row order
            assert _is_concat_of_prefixes(middle, [refs[o] for o in range(len(refs)) if o != r])
        assert (max(others_lens) > 0) if on else (max(others_lens) == 0)
