"""Trained draft heads: hand-computed targets, the zero-init identity, greedy-exact batched decoding with
any heads, fewer forwards with heads fitted to the model, safe files, clear errors."""
import pytest
import torch

from bevlm.inference.speculative import (DraftHeads, SelfSpeculativeDecoder, load_draft_heads, save_draft_heads,
                                         train_draft_heads)
from bevlm.inference.speculative.draft_heads import HeadData, HiddenTap, future_targets, output_rows
from bevlm.inference.speculative.replay import check_trace
from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.cache_api import cache_kwargs
from bevlm.models.llm.generation import fork_cache
from bevlm.testing import TINY_LLAMA_CONFIG
from tests.llm_helpers import tiny_llm_with_head_bias

torch.set_num_threads(1)

P, MAX_NEW, K = 5, 16, 3
QUESTIONS = ["What are the important objects in the current scene?", "Predict the behavior of the ego vehicle.",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?", "Yes?",
             "What is the moving status of object <c2,CAM_BACK,10.0,20.0>?"]


def test_future_targets_hand_computed():
    """Head k at t learns choices[t + k] only while t .. t + k stay inside one supervised run."""
    choices = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17])
    supervised = torch.tensor([0, 1, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    got = future_targets(choices, supervised, 2)
    want = torch.tensor([[-1, -1],    # t=0 not supervised: its run is 0
                         [12, 13],    # run 1..3: t+1=2, t+2=3 inside
                         [13, -1],    # t+2=4 leaves the run
                         [-1, -1],    # t+1=4 leaves the run
                         [-1, -1],
                         [16, -1],
                         [-1, -1],
                         [-1, -1]])
    assert torch.equal(got, want)


def test_zero_init_heads_are_the_lm_head():
    """With the residual blocks at zero and the LM head's rows, every head chooses as the LM head does."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=dict(TINY_LLAMA_CONFIG, tie_word_embeddings=False)).eval()
    vocab = torch.arange(llm.lm.config.vocab_size)
    heads = DraftHeads(llm.hidden_size, vocab, 3, output_rows(llm.lm, vocab))
    hidden = torch.randn(7, llm.hidden_size)
    want = llm.lm.get_output_embeddings()(hidden).argmax(-1)
    assert all(torch.equal(heads(hidden)[:, k].argmax(-1), want) for k in range(3))
    assert heads.propose(hidden[0], 2) == [int(want[0])] * 2
    assert heads.propose(hidden[0], 0) == []
    assert heads.propose(hidden[0], 3, min_prob=1.01) == []  # no guess is that sure
    assert heads.propose(hidden[0], 3, stop_ids=(int(want[0]),)) == [int(want[0])]  # ends at a stop id


@pytest.fixture(scope="module")
def fitted():
    """The tiny Llama, a frame cache, the greedy answers and heads fitted to the model's own answers."""
    llm = tiny_llm_with_head_bias(num_hidden_layers=4, initializer_range=0.2)
    torch.manual_seed(1)
    cache = llm.prefill(torch.randn(1, P, llm.hidden_size))
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    data = _self_distillation(llm, cache, refs)
    heads, report = train_draft_heads(data, lambda v: output_rows(llm.lm, v), K, epochs=60, lr=3e-3,
                                      batch_size=16, val_share=0.0)
    return llm, cache, refs, heads, report


def _self_distillation(llm, cache, refs) -> HeadData:
    """Hidden states and head targets of each question's greedy answer, fed after the frame cache."""
    lm, eos = llm.lm, llm.tokenizer.eos_token_id
    hiddens, targets, frames = [], [], []
    for i, (q, ans) in enumerate(zip(QUESTIONS, refs)):
        query = llm._query_ids(q)
        ids = query + ans
        pos = torch.arange(cache.prefix_len, cache.prefix_len + len(ids))[None]
        with HiddenTap(lm) as tap, torch.no_grad():
            out = lm(input_ids=torch.tensor([ids]), position_ids=pos, **cache_kwargs(lm, fork_cache(cache.past_key_values)),
                     use_cache=True, logits_to_keep=0)
        choices = out.logits[0].argmax(-1)
        assert torch.equal(choices[len(query) - 1:len(ids) - 1], torch.tensor(ans))  # teacher forcing = greedy
        supervised = torch.zeros(len(ids), dtype=torch.bool)
        supervised[len(query) - 1:len(ids) - (0 if len(ans) < MAX_NEW else 1)] = True  # answer (+ its stop)
        tgt = future_targets(choices, supervised, K)
        hiddens.append(tap.hidden[0][supervised])
        targets.append(tgt[supervised])
        frames.append(torch.full((int(supervised.sum()),), i))
        assert eos not in ans
    return HeadData(torch.cat(hiddens).float(), torch.cat(targets), torch.cat(frames))


def test_fit_learns_the_models_own_continuations(fitted):
    *_, report = fitted
    assert report["num_heads"] == K and report["val_top1"] is None and report["val_frames"] == 0
    assert report["train_top1"][0] > 0.9  # 5 answers of <= 16 tokens: the heads can learn them


def test_batched_decoding_with_heads_is_greedy_exact_and_needs_fewer_forwards(fitted):
    """Heads draft where lookup has nothing: the answers stay the plain greedy ones (also with heads
    of random weights, and with per-row budgets); heads fitted to the model cut the verify forwards."""
    llm, cache, refs, heads, _ = fitted
    plain = SelfSpeculativeDecoder(llm, [], use_ngram=False, use_layer_skip=False, batched=True)
    assert plain.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == refs
    with_heads = SelfSpeculativeDecoder(llm, [], use_ngram=False, use_layer_skip=False, batched=True,
                                        draft_heads=heads, head_draft_len=K)
    assert with_heads.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == refs
    s = with_heads.stats
    assert s.heads_drafted == s.drafted > 0 and 0 < s.heads_accepted == s.accepted
    assert s.full_forwards < plain.stats.full_forwards
    budgets = [1, 3, MAX_NEW, 0, 5]
    assert with_heads.generate_ids_batch(cache, QUESTIONS, budgets) == [r[:b] for r, b in zip(refs, budgets)]
    torch.manual_seed(3)
    noisy = DraftHeads(llm.hidden_size, heads.vocab, K)
    with torch.no_grad():
        for p in noisy.parameters():
            p.normal_(0, 0.5)
    for chain in (False, True):
        for policy in ("fallback", "override"):
            dec = SelfSpeculativeDecoder(llm, [], use_ngram=True, ngram_min_n=1, use_layer_skip=False, batched=True,
                                         chain_drafts=chain, draft_heads=noisy, head_draft_len=2, head_policy=policy)
            assert dec.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == refs
            assert dec.stats.heads_drafted > dec.stats.heads_accepted


def test_override_policy_drafts_with_the_heads_beside_lookup(fitted):
    """With lookup on, 'fallback' leaves the heads the steps lookup has nothing for; 'override' also
    takes the steps where lookup's draft departs from the heads' guesses; both stay greedy-exact."""
    llm, cache, refs, heads, _ = fitted
    stats = {}
    for policy in ("fallback", "override"):
        dec = SelfSpeculativeDecoder(llm, [], use_ngram=True, ngram_min_n=1, use_layer_skip=False, batched=True,
                                     chain_drafts=True, draft_heads=heads, head_draft_len=K, head_policy=policy)
        assert dec.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == refs
        stats[policy] = dec.stats
    assert stats["override"].heads_drafted > stats["fallback"].heads_drafted
    assert stats["override"].full_forwards <= stats["fallback"].full_forwards


def test_prefers_heads_hand_cases(fitted):
    llm, _, _, heads, _ = fitted
    fallback = SelfSpeculativeDecoder(llm, [], batched=True, draft_heads=heads)
    override = SelfSpeculativeDecoder(llm, [], batched=True, draft_heads=heads, head_policy="override")
    assert fallback.prefers_heads([], [5]) and not fallback.prefers_heads([1], [5]) and not fallback.prefers_heads([], [])
    assert override.prefers_heads([], [5]) and override.prefers_heads([1, 2], [5])       # none / disagree at once
    assert override.prefers_heads([5, 2], [5, 6, 7]) and override.prefers_heads([5], [5, 6])  # later / shorter
    assert not override.prefers_heads([5, 6, 7, 8], [5, 6]) and not override.prefers_heads([1], [])
    with pytest.raises(ValueError, match="head_policy"):
        SelfSpeculativeDecoder(llm, [], batched=True, draft_heads=heads, head_policy="always")


def test_trace_with_heads_is_refused_by_the_replay(fitted):
    llm, cache, refs, heads, _ = fitted
    dec = SelfSpeculativeDecoder(llm, [], use_ngram=True, use_layer_skip=False, batched=True, draft_heads=heads)
    dec.trace = []
    dec.generate_ids_batch(cache, QUESTIONS, MAX_NEW)
    assert dec.trace[0]["draft_heads"] is True
    assert "drafted by trained heads" in check_trace(dec.trace, dec)[0]


def test_file_round_trip_and_errors(fitted, tmp_path):
    llm, cache, refs, heads, _ = fitted
    path = str(tmp_path / "heads.safetensors")
    save_draft_heads(heads, path, info=dict(checkpoint="x.pth"))
    back = load_draft_heads(path, hidden_size=llm.hidden_size, vocab_size=llm.lm.config.vocab_size)
    hidden = torch.randn(4, llm.hidden_size)
    assert torch.equal(back(hidden), heads(hidden)) and back.info == dict(checkpoint="x.pth")
    dec = SelfSpeculativeDecoder(llm, [], use_ngram=False, use_layer_skip=False, batched=True, draft_heads=path)
    assert dec.generate_ids_batch(cache, QUESTIONS, MAX_NEW) == refs
    with pytest.raises(FileNotFoundError, match="tools/train_draft_heads.py"):
        load_draft_heads(str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match="hidden size"):
        load_draft_heads(path, hidden_size=llm.hidden_size + 1)
    with pytest.raises(ValueError, match="vocabulary has 5 ids"):
        load_draft_heads(path, vocab_size=5)
    from safetensors.torch import save_file
    other = str(tmp_path / "other.safetensors")
    save_file({"w": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not written by save_draft_heads"):
        load_draft_heads(other)
    with pytest.raises(ValueError, match="batched=True"):
        SelfSpeculativeDecoder(llm, [], batched=False, draft_heads=heads)
    with pytest.raises(ValueError, match="head_draft_len"):
        SelfSpeculativeDecoder(llm, [], batched=True, draft_heads=heads, head_draft_len=0)
    with pytest.raises(ValueError, match="sorted and unique"):
        DraftHeads(8, torch.tensor([3, 1]), 2)


def test_head_training_data_on_the_tiny_bevvlm(tiny_world):
    """The model-level collection: one teacher-forced forward per training frame in the test-time QA
    format; every kept position has a target, and head 1's target at t is head 2's at t - 1."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from bevlm.inference.speculative.draft_heads import head_training_data
    from tests.model_helpers import tiny_bevvlm_and_frames

    init_default_scope("bevlm")
    model, ds, _ = tiny_bevvlm_and_frames(tiny_world, encoder_layers=1)
    data = head_training_data(model, [pseudo_collate([ds[i]]) for i in range(2)], num_heads=2, log=lambda _: None)
    n = len(data.hidden)
    assert data.hidden.shape == (n, model.llm.hidden_size) and data.targets.shape == (n, 2) and n > 0
    assert bool((data.targets >= 0).any(-1).all()) and set(data.frame.tolist()) == {0, 1}
    both = (data.targets[1:, 0] >= 0) & (data.targets[:-1, 1] >= 0) & (data.frame[1:] == data.frame[:-1])
    assert bool(both.any()) and torch.equal(data.targets[1:, 0][both], data.targets[:-1, 1][both])
    heads, report = train_draft_heads(data, lambda v: output_rows(model.llm.lm, v), 2, epochs=1, val_share=0.5)
    assert report["val_frames"] == 1 and len(report["val_top1"]) == 2
