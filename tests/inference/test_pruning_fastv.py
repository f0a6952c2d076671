"""FastV prefill pruning: identity at keep_ratio 1, exact top-k of eager attention scores,
correct decoding from the pruned cache (original RoPE positions), FLOP savings."""
import pytest
import torch

from bevlm.models.pruning import (PrunedPrefixCache, fastv_prefill, fastv_scores, num_kept,
                                  prefill_flops)
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

N_VIS, N_AFTER = 24, 3  # visual tokens, then ego + 2 trajectory queries
CFG = dict(TINY_LLAMA_CONFIG, num_hidden_layers=4, initializer_range=0.2)
QUESTIONS = ["Predict the behavior of the ego vehicle.",
             "What are the important objects in the current scene?"]
MAX_NEW = 10


def _llm(attn: str = "sdpa", **cfg) -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(tiny_config=dict(CFG, **cfg), attn_implementation=attn).eval()


@pytest.fixture(scope="module")
def llm():
    return _llm()


@pytest.fixture(scope="module")
def prefix():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, N_VIS + N_AFTER, CFG["hidden_size"], generator=g)


def _kv(cache):
    return [t for layer in cache.past_key_values.layers for t in (layer.keys, layer.values)]


def _text(llm):
    return llm.embed_tokens(torch.tensor([llm.prompt.prefix_ids]))  # [1, T0, D]


def _eager_scores(prefix, layer):
    """Scores from an independent eager model's returned attention maps."""
    ref = _llm("eager")
    with torch.no_grad():
        inputs = torch.cat([_text(ref), prefix], dim=1)
        attn = ref.lm.get_decoder()(inputs_embeds=inputs, output_attentions=True, use_cache=False).attentions
    t0 = ref.prefix_text_len
    probs = attn[layer - 1][0]  # [H, T, T]
    return probs[:, t0 + N_VIS:, t0:t0 + N_VIS].mean(dim=(0, 1))  # [N_VIS]


@torch.no_grad()
def _reference_ids(llm, prefix, kept_index, question):
    """Greedy ids without any cache: kept prefix + query, original positions, recomputed each step."""
    t0 = llm.prefix_text_len
    base = torch.cat([_text(llm), prefix[:, kept_index]], dim=1)  # [1, T0 + P', D]
    base_pos = torch.cat([torch.arange(t0), t0 + kept_index])
    query, out = llm._query_ids(question), []
    next_pos = t0 + prefix.shape[1]
    while len(out) < MAX_NEW:
        ids = torch.tensor([query + out])
        x = torch.cat([base, llm.embed_tokens(ids)], dim=1)
        pos = torch.cat([base_pos, torch.arange(next_pos, next_pos + ids.shape[1])])[None]
        logits = llm.lm(inputs_embeds=x, position_ids=pos, attention_mask=torch.ones(pos.shape, dtype=torch.long),
                        use_cache=False).logits
        token = int(logits[0, -1].argmax())
        if token in llm.prompt.stop_ids:
            break
        out.append(token)
    return out


def test_keep_ratio_one_is_the_unpruned_prefill(llm, prefix):
    plain = llm.prefill(prefix)
    for ratio in (1.0, 0.99):  # 0.99 * 24 rounds to 24: nothing to drop either
        cache = fastv_prefill(llm, prefix, (0, N_VIS), ratio)
        assert cache.prefix_len == plain.prefix_len == cache.cached_len
        assert all(torch.equal(a, b) for a, b in zip(_kv(cache), _kv(plain)))
        assert torch.equal(cache.hidden_prefix, plain.hidden_prefix)
        for q in QUESTIONS:
            assert llm.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(plain, q, MAX_NEW)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_scores_match_eager_attention_and_top_tokens_are_kept(llm, prefix, layer):
    scores = fastv_scores(llm, prefix, (0, N_VIS), layer)
    ref = _eager_scores(prefix, layer)
    torch.testing.assert_close(scores, ref, atol=1e-6, rtol=1e-5)
    assert scores.std() > 0  # not a degenerate uniform ranking
    for ratio in (0.25, 0.5, 0.75):
        cache = fastv_prefill(llm, prefix, (0, N_VIS), ratio, layer)
        n_keep = round(ratio * N_VIS)
        kept_vis = cache.kept_index[cache.kept_index < N_VIS]
        assert len(kept_vis) == n_keep == num_kept(N_VIS, ratio)
        expected = set(torch.topk(ref, n_keep).indices.tolist())
        assert set(kept_vis.tolist()) == expected
        assert torch.equal(cache.kept_index[-N_AFTER:], torch.arange(N_VIS, N_VIS + N_AFTER))  # never pruned
        assert cache.cached_len == llm.prefix_text_len + n_keep + N_AFTER
        assert cache.prefix_len == llm.prefix_text_len + N_VIS + N_AFTER


def test_pruned_cache_decodes_like_the_uncached_reference(llm, prefix):
    cache = fastv_prefill(llm, prefix, (0, N_VIS), 0.5)
    assert isinstance(cache, PrunedPrefixCache)
    answers = []
    for q in QUESTIONS:
        ids = llm.generate_ids(cache, q, MAX_NEW)
        assert ids == _reference_ids(llm, prefix, cache.kept_index, q)
        answers.append(ids)
    assert len(set(answers[0])) > 1  # a non-degenerate answer, so positions actually matter
    again = fastv_prefill(llm, prefix, (0, N_VIS), 0.5)  # deterministic
    assert torch.equal(again.kept_index, cache.kept_index)
    assert [llm.generate_ids(again, q, MAX_NEW) for q in QUESTIONS] == answers


def test_batched_decoding_of_a_pruned_cache(llm, prefix):
    cache = fastv_prefill(llm, prefix, (0, N_VIS), 0.5)
    assert llm.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == [llm.generate_ids(cache, q, MAX_NEW)
                                                                  for q in QUESTIONS]


def test_hidden_prefix_keeps_trajectory_states(llm, prefix):
    cache = fastv_prefill(llm, prefix, (0, N_VIS), 0.25)
    t0 = llm.prefix_text_len
    with torch.no_grad():
        kept = cache.kept_index
        x = torch.cat([_text(llm), prefix[:, kept]], dim=1)
        pos = torch.cat([torch.arange(t0), t0 + kept])[None]
        hidden = llm.lm.get_decoder()(inputs_embeds=x, position_ids=pos,
                                      attention_mask=torch.ones(pos.shape, dtype=torch.long)).last_hidden_state
    assert cache.hidden_prefix.shape == (1, len(kept), CFG["hidden_size"])
    torch.testing.assert_close(cache.hidden_prefix[:, -N_AFTER:], hidden[:, -N_AFTER:], atol=1e-5, rtol=1e-5)


def test_pruned_prefill_flops():
    """FastV FLOPs = plain prefill of the kept tokens + a scoring pass between K-1 and K layers."""
    n_layers, layer, n_vis = 8, 2, 96
    llm = _llm(num_hidden_layers=n_layers)
    g = torch.Generator().manual_seed(2)
    prefix = torch.randn(1, n_vis + N_AFTER, CFG["hidden_size"], generator=g)
    full = prefill_flops(llm, prefix)
    pruned = prefill_flops(llm, prefix, (0, n_vis), 0.25, layer)
    kept_len = round(0.25 * n_vis) + N_AFTER
    plain_kept = prefill_flops(llm, prefix[:, :kept_len])  # same token count as the kept prefill
    scoring = pruned - plain_kept
    assert (layer - 1) / n_layers * full < scoring < layer / n_layers * full
    t0 = llm.prefix_text_len
    token_fraction = (t0 + kept_len) / (t0 + n_vis + N_AFTER)
    assert pruned < full
    assert pruned / full == pytest.approx(token_fraction + (layer - 0.75) / n_layers, abs=0.05)


def test_bad_arguments_raise(llm, prefix):
    with pytest.raises(ValueError, match="keep_ratio"):
        fastv_prefill(llm, prefix, (0, N_VIS), 0.0)
    with pytest.raises(ValueError, match="layer"):
        fastv_prefill(llm, prefix, (0, N_VIS), 0.5, layer=CFG["num_hidden_layers"] + 1)
    with pytest.raises(ValueError, match="after the visual"):
        fastv_prefill(llm, prefix, (0, N_VIS + N_AFTER), 0.5)
