"""FastV prefill pruning on every tiny LLM architecture (Llama, Qwen2, Phi-3's fused ``qkv_proj``,
Phi-2's partial rotary, GPT-NeoX's ``attention.query_key_value`` and partial rotary, Gemma-2's
scaling / soft-capped logits / sliding window).

Per architecture: keep ratio 1.0 is the unpruned prefill (identity), the scores are the model's own
eager attention maps, a keep ratio < 1 keeps ``round(ratio * N)`` visual tokens (the top scored, never
the ego / trajectory rows) and the pruned cache decodes like an uncached reference at the original
positions.
"""
import pytest
import torch

from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.architectures import attention_parts
from bevlm.models.pruning import PrunedPrefixCache, fastv_prefill, fastv_scores, num_kept, prefill_kept
from bevlm.testing import TINY_ARCH_CONFIGS

torch.set_num_threads(1)

ARCHS = sorted(TINY_ARCH_CONFIGS)
N_VIS, N_AFTER = 24, 3  # visual tokens, then ego + 2 trajectory queries
QUESTIONS = ["Predict the behavior of the ego vehicle.", "What are the important objects in the current scene?"]
MAX_NEW = 8
LAYOUTS = {"llama": "separate", "qwen2": "separate", "gemma2": "separate", "phi": "separate", "phi3": "concat",
           "gpt_neox": "per_head"}


def _config(arch: str) -> dict:
    return dict(TINY_ARCH_CONFIGS[arch], num_hidden_layers=4, initializer_range=0.2)


def _llm(arch: str, attn: str = "sdpa") -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(tiny_config=_config(arch), attn_implementation=attn).eval()


@pytest.fixture(scope="module", params=ARCHS)
def arch_llm(request):
    arch = request.param
    prefix = torch.randn(1, N_VIS + N_AFTER, 64, generator=torch.Generator().manual_seed(1))
    return arch, _llm(arch), prefix


def _kv(cache):
    return [t for layer in cache.past_key_values.layers for t in (layer.keys, layer.values)]


def _text(llm):
    return llm.embed_tokens(torch.tensor([llm.prompt.prefix_ids]))  # [1, T0, D]


@torch.no_grad()
def _eager_scores(arch, prefix, layer):
    """Scores from an independent eager model's returned attention maps."""
    ref = _llm(arch, "eager")
    inputs = torch.cat([_text(ref), prefix], dim=1)
    attn = ref.lm.get_decoder()(inputs_embeds=inputs, output_attentions=True, use_cache=False).attentions
    t0 = ref.prefix_text_len
    return attn[layer - 1][0, :, t0 + N_VIS:, t0:t0 + N_VIS].mean(dim=(0, 1))  # [N_VIS]


@torch.no_grad()
def _reference_ids(llm, prefix, kept_index, question):
    """Greedy ids without any cache: kept prefix + query, original positions, recomputed each step."""
    t0 = llm.prefix_text_len
    base = torch.cat([_text(llm), prefix[:, kept_index]], dim=1)  # [1, T0 + P', D]
    base_pos = torch.cat([torch.arange(t0), t0 + kept_index])
    query, out = llm._query_ids(question), []
    next_pos = t0 + prefix.shape[1]
    while len(out) < MAX_NEW:
        x = torch.cat([base, llm.embed_tokens(torch.tensor([query + out]))], dim=1)
        pos = torch.cat([base_pos, torch.arange(next_pos, next_pos + len(query) + len(out))])[None]
        logits = llm.lm(inputs_embeds=x, position_ids=pos, attention_mask=torch.ones(pos.shape, dtype=torch.long),
                        use_cache=False).logits
        token = int(logits[0, -1].argmax())
        if token in llm.prompt.stop_ids:
            break
        out.append(token)
    return out


def test_attention_parts_of_the_architecture(arch_llm):
    arch, llm, _ = arch_llm
    parts = attention_parts(llm.lm, 1)
    assert parts.layout == LAYOUTS[arch]
    assert parts.num_heads * parts.head_dim == 64 and parts.num_heads % parts.num_kv_heads == 0
    assert (parts.softcap is not None) == (arch == "gemma2")
    # Gemma-2 alternates sliding-window (even) and full-attention (odd) layers
    assert attention_parts(llm.lm, 0).sliding_window == (512 if arch == "gemma2" else None)
    assert parts.sliding_window is None


def test_gemma2_sliding_window_scores_are_the_model_attention():
    """A window shorter than the prefix: the local layer's scores still equal its attention maps."""
    cfg = dict(_config("gemma2"), sliding_window=16)
    prefix = torch.randn(1, N_VIS + N_AFTER, 64, generator=torch.Generator().manual_seed(1))
    llms = []
    for attn in ("sdpa", "eager"):
        torch.manual_seed(0)
        llms.append(HFCausalLM(tiny_config=cfg, attn_implementation=attn).eval())
    llm, ref = llms
    assert attention_parts(llm.lm, 0).sliding_window == 16 and llm.prefix_text_len + N_VIS > 16
    with torch.no_grad():
        maps = ref.lm.get_decoder()(inputs_embeds=torch.cat([_text(ref), prefix], dim=1), output_attentions=True,
                                    use_cache=False).attentions
    t0 = ref.prefix_text_len
    expected = maps[0][0, :, t0 + N_VIS:, t0:t0 + N_VIS].mean(dim=(0, 1))
    assert (expected[:4] == 0).all()  # visual tokens outside every scoring row's window
    torch.testing.assert_close(fastv_scores(llm, prefix, (0, N_VIS), 1), expected, atol=1e-6, rtol=1e-5)


def test_keep_ratio_one_is_the_unpruned_prefill(arch_llm):
    _, llm, prefix = arch_llm
    plain = llm.prefill(prefix)
    cache = fastv_prefill(llm, prefix, (0, N_VIS), 1.0)
    assert cache.prefix_len == plain.prefix_len == cache.cached_len and cache.visual_scores is None
    assert all(torch.equal(a, b) for a, b in zip(_kv(cache), _kv(plain)))
    assert torch.equal(cache.hidden_prefix, plain.hidden_prefix)
    assert [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS] == [llm.generate_ids(plain, q, MAX_NEW)
                                                                       for q in QUESTIONS]
    # the kept-prefill path itself, keeping everything, is the plain prefill too
    past, hidden = prefill_kept(llm, prefix, torch.arange(N_VIS + N_AFTER))
    torch.testing.assert_close(hidden, plain.hidden_prefix, atol=1e-5, rtol=1e-5)
    for a, b in zip([t for layer in past.layers for t in (layer.keys, layer.values)], _kv(plain)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [1, 2])
def test_scores_are_the_model_attention(arch_llm, layer):
    arch, llm, prefix = arch_llm
    scores = fastv_scores(llm, prefix, (0, N_VIS), layer)
    torch.testing.assert_close(scores, _eager_scores(arch, prefix, layer), atol=1e-6, rtol=1e-5)
    assert scores.std() > 0


def test_pruned_prefill_keeps_the_stated_tokens_and_decodes_like_the_reference(arch_llm):
    arch, llm, prefix = arch_llm
    ratio = 0.5
    cache = fastv_prefill(llm, prefix, (0, N_VIS), ratio, layer=2)
    assert isinstance(cache, PrunedPrefixCache)
    n_keep = num_kept(N_VIS, ratio)
    kept_vis = cache.kept_index[cache.kept_index < N_VIS]
    assert len(kept_vis) == n_keep == 12
    assert set(kept_vis.tolist()) == set(torch.topk(cache.visual_scores, n_keep).indices.tolist())
    assert torch.equal(cache.kept_index[-N_AFTER:], torch.arange(N_VIS, N_VIS + N_AFTER))  # never pruned
    assert cache.cached_len == llm.prefix_text_len + n_keep + N_AFTER
    assert cache.prefix_len == llm.prefix_text_len + N_VIS + N_AFTER
    assert cache.hidden_prefix.shape == (1, n_keep + N_AFTER, 64)
    answers = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    for q, ids in zip(QUESTIONS, answers):
        assert ids == _reference_ids(llm, prefix, cache.kept_index, q), (arch, q)
    assert llm.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == answers
