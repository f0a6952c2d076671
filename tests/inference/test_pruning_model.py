"""Pruning settings applied to the tiny BEVVLM (LoRA LLM): identity, FLOP accounting, decoding."""
import pytest
import torch
from mmengine.registry import init_default_scope

from bevlm.models.pruning import (PrunedPrefixCache, PruningSetting, count_pruned_flops, flops_table,
                                  frame_prefix, prefill_flops, prefill_with_setting)
from tests.model_helpers import tiny_bevvlm_one_frame

init_default_scope("bevlm")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tiny_world):
    return tiny_bevvlm_one_frame(tiny_world, encoder_layers=2)


def test_default_setting_is_the_model_prefix(setup):
    model, imgs, samples = setup
    with torch.no_grad():
        expected = model(inputs={"imgs": imgs}, data_samples=samples, mode="tensor")
        prefix, visual_slice = frame_prefix(model, imgs, samples, PruningSetting())
    assert visual_slice == (0, model.projector.num_tokens)
    assert torch.equal(prefix, expected)
    cache = prefill_with_setting(model.llm, prefix, visual_slice, PruningSetting())
    plain = model.llm.prefill(prefix)
    assert torch.equal(cache.hidden_prefix, plain.hidden_prefix)


def test_flops_per_setting(setup):
    model, imgs, samples = setup
    settings = {"base": PruningSetting(), "exit1": PruningSetting(encoder_layers=1),
                "bev50": PruningSetting(bev_keep_ratio=0.5),
                "fastv50": PruningSetting(fastv_keep_ratio=0.5, fastv_layer=1)}
    rows = {r["name"]: r for r in flops_table(model, imgs, samples, settings)}
    base = rows["base"]
    assert base["encoder_ratio"] == base["prefill_ratio"] == 1.0
    assert rows["exit1"]["encoder"] < base["encoder"] and rows["exit1"]["prefill"] == base["prefill"]
    assert rows["bev50"]["visual_tokens"] == base["visual_tokens"] // 2
    assert rows["bev50"]["prefill"] < base["prefill"]
    # FastV = the LLM prefill count of the same prefix under FastV; the encoder is untouched
    prefix, visual_slice = frame_prefix(model, imgs, samples, PruningSetting())
    assert rows["fastv50"]["prefill"] == prefill_flops(model.llm, prefix, visual_slice, 0.5, 1)
    assert rows["fastv50"]["encoder"] == base["encoder"]
    assert count_pruned_flops(model, imgs, samples, settings["bev50"]) == {
        k: v for k, v in rows["bev50"].items() if k in ("encoder", "prefill", "visual_tokens", "prefix_tokens")}


def test_decoding_after_combined_pruning_is_deterministic(setup):
    model, imgs, samples = setup
    setting = PruningSetting(encoder_layers=1, bev_keep_ratio=0.75, fastv_keep_ratio=0.5, fastv_layer=2)
    question = samples[0].qa[0].question
    runs = []
    for _ in range(2):
        prefix, visual_slice = frame_prefix(model, imgs, samples, setting)
        cache = prefill_with_setting(model.llm, prefix, visual_slice, setting)
        assert isinstance(cache, PrunedPrefixCache)
        k = model.traj_head.num_tokens
        traj = model.traj_head(cache.hidden_prefix[:, -k:], model._traj_ego(samples))
        runs.append((cache.kept_index.tolist(), model.llm.generate_ids(cache, question, 6), traj))
    assert visual_slice == (0, 3) and len(runs[0][0]) == prefix.shape[1] - 1  # 3 -> 2 visual tokens
    assert runs[0][:2] == runs[1][:2] and torch.equal(runs[0][2], runs[1][2])
    assert runs[0][2].shape == (1, 6, 2)


def test_shared_prompt_cache_same_answers_fewer_prefill_flops(setup):
    """model.test_cfg.share_prompt_cache: the prompt text is prefilled once per model; a frame's prefill
    counts only its prefix embeddings, and the answers and trajectory are unchanged."""
    import copy

    model, imgs, samples = setup
    runs = {}
    for share in (False, True):
        m = copy.deepcopy(model)
        m.set_test_cfg(dict(share_prompt_cache=share))
        m.reset_test_state()
        with torch.no_grad():
            out = m(inputs={"imgs": imgs}, data_samples=copy.deepcopy(samples), mode="predict")[0]
        runs[share] = out
    plain, shared = runs[False], runs[True]
    assert shared.pred_answers == plain.pred_answers
    torch.testing.assert_close(torch.as_tensor(shared.pred_traj), torch.as_tensor(plain.pred_traj),
                               atol=1e-4, rtol=1e-4)
    t0, p = model.llm.prefix_text_len, plain.efficiency["prefix_tokens"]
    assert t0 > 0 and shared.efficiency["prefill"] < plain.efficiency["prefill"]
    # the transformer FLOPs scale with the tokens run (attention over the cached text adds a little)
    assert shared.efficiency["prefill"] < plain.efficiency["prefill"] * (p + 1) / (t0 + p)
    # the text prefill is counted apart: one text prefill + the frame's own = the unshared prefill, up to
    # the attention of the text tokens among themselves (counted once in each)
    assert plain.efficiency["shared_prompt"] == 0 and plain.efficiency["shared_prompt_spent"] == 0
    text = shared.efficiency["shared_prompt"]
    assert text > 0 and shared.efficiency["shared_prompt_spent"] == text  # this frame built the cache
    assert text + shared.efficiency["prefill"] == pytest.approx(plain.efficiency["prefill"], rel=0.02)


def test_variant_switches_for_stop_rule_and_prompt_cache(setup):
    from bevlm.inference.variants import build_variant
    from bevlm.models.llm.stopping import RepetitionStop

    model = setup[0]
    assert model.llm.stop_rule == RepetitionStop(max_period=8, min_repeats=3, min_span=12)  # the config's rule
    off = build_variant(model, dict(repetition_stop=None, share_prompt_cache=True), log=lambda *_: None)
    assert off.llm.stop_rule is None and off.llm.share_text_prefix
    assert model.llm.stop_rule is not None and not model.llm.share_text_prefix  # the base is untouched
    short = build_variant(model, dict(repetition_stop=dict(max_period=2)), log=lambda *_: None)
    assert short.llm.stop_rule == RepetitionStop(max_period=2)
