"""Trajectory tokens after the perception and prediction QA (``BEVVLM(traj_placement='after_qa')``)
against the prefix head (the default), on the tiny model and world."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.evaluation import PlanningMetric
from bevlm.inference.variants import build_variant
from bevlm.models.llm.packing import build_packed_batch
from bevlm.models.llm.prompt import block_ids
from bevlm.models.llm.query_slots import forward_train_with_queries, hidden_after_blocks
from bevlm.models.qa import answer_frame, blocks_for_policy
from bevlm.models.qa.traj_context import CONTEXT_STAGES, context_blocks, context_flags
from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)
K = 6  # trajectory query tokens of the tiny config's head


def _cfg():
    return Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")


def _model(cfg, **overrides):
    torch.manual_seed(0)
    mcfg = cfg.model.to_dict()
    mcfg.update(overrides)
    return MODELS.build(mcfg)


def _dataset(world, cfg, split="train", **kw):
    return DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{world}/infos/bevlm_infos_{split}.pkl",
                               data_root=f"{world}/", pipeline=cfg.pipeline, **kw))


def _talkative(model):
    """Random LoRA B matrices: the random tiny LLM then writes non-empty answers (it answers '' else)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _train_batch(model, world, cfg):
    """Two training items of 3 questions: [perception, perception, prediction] and
    [perception, perception, planning] (the chunks are strided over the frame's graph)."""
    ds = _dataset(world, cfg, queue_length=2, qa_per_sample=3)
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[5]]), True)
    stages = [[qa.stage for qa in s.qa] for s in data["data_samples"]]
    assert stages == [["perception", "perception", "prediction"], ["perception", "perception", "planning"]]
    return data


def test_default_placement_is_the_prefix_head_bit_for_bit(tiny_world):
    """The default model computes exactly the reference path of the prefix head: prefix
    [visual][ego][K queries], every block after it, the head on the last K prefix states, in
    training (loss) and in predict (trajectory and answers)."""
    cfg = _cfg()
    model = _model(cfg).eval()
    assert model.traj_placement == "prefix"
    data = _train_batch(model, tiny_world, cfg)
    imgs, samples = data["inputs"]["imgs"], data["data_samples"]
    with torch.no_grad():
        losses = model(**data, mode="loss")
        vis, _ = model.visual_tokens(imgs, samples)
        ego = model.ego_embed(torch.stack([s.ego_status for s in samples]))[:, None]
        prefix = torch.cat([vis, ego, model.traj_head.queries.expand(len(samples), -1, -1)], dim=1)
        blocks = [[(qa.question, qa.answer) for qa in s.qa] for s in samples]
        ref = model.llm.forward_train(model.llm.build_batch(blocks, prefix.shape[1]), prefix)
        traj = model.traj_head(ref["hidden_prefix"][:, -K:], model._traj_ego(samples))
        gt = torch.stack([s.gt_traj for s in samples])
        mask = torch.stack([s.gt_traj_mask for s in samples])
        ref_traj = model.traj_head.loss(traj, gt, mask)["loss_traj"]
    assert torch.equal(losses["loss_lm"], ref["loss_lm"]) and torch.equal(losses["loss_traj"], ref_traj)

    # every question decoded (the reference below is answer_frame, which decodes multiple choice too)
    _talkative(model).set_test_cfg(dict(stream_temporal=False, multiple_choice="generate"))
    frame = _dataset(tiny_world, cfg, queue_length=1, qa_mode="frame")
    pdata = model.data_preprocessor(pseudo_collate([frame[0]]), False)
    with torch.no_grad():
        out = model(**copy.deepcopy(pdata), mode="predict")[0]
        sample = pdata["data_samples"][0]
        vis, _ = model.visual_tokens(pdata["inputs"]["imgs"], [sample])
        ego = model.ego_embed(sample.ego_status[None])[:, None]
        cache = model.llm.prefill(torch.cat([vis, ego, model.traj_head.queries[None]], dim=1))
        ref_traj = model.traj_head(cache.hidden_prefix[:, -K:], model._traj_ego([sample]))[0]
        ref_answers = answer_frame(model.llm, cache, sample.qa, model.qa_policy, model.test_cfg.max_new_tokens,
                                   model.test_cfg.family_max_new_tokens).answers
    assert torch.equal(out.pred_traj, ref_traj) and out.pred_answers == ref_answers
    assert any(ref_answers.values()) and "traj_context_tokens" not in out.efficiency


def test_query_slots_leave_the_blocks_and_their_loss_alone(tiny_world):
    """K query slots after a row's blocks: the blocks' ids, labels, positions and attention are those
    of the batch without slots, no block sees a slot, the slots read the prefix, the flagged blocks
    and themselves (causally) from positions after the longest block read, and the LM loss is
    unchanged."""
    model = _model(_cfg()).eval()
    llm = model.llm
    blocks = [[("Is there a car?", "Yes."), ("What is the moving status of the bus ahead?", "Going ahead slowly."),
               ("What should the ego vehicle do?", "Keep going at the same speed, then turn left.")],
              [("What should the ego vehicle do?", "Stop.")]]
    flags = [[True, True, False], [False]]
    p = 5
    plain = build_packed_batch(llm.tokenizer, llm.prompt, blocks, p, llm.pad_id)
    slots = build_packed_batch(llm.tokenizer, llm.prompt, blocks, p, llm.pad_id, query_slots=K, query_context=flags)
    assert "query_index" not in plain and set(slots) == set(plain) | {"query_index"}
    prefix_len = slots["prefix_len"]
    lengths = [[len(sum(block_ids(llm.tokenizer, llm.prompt, q, a), [])) for q, a in row] for row in blocks]
    for b, row in enumerate(lengths):
        n = prefix_len + sum(row)  # the row's tokens before the slots
        index = slots["query_index"][b]
        assert index.tolist() == list(range(n, n + K))
        for key in ("input_ids", "labels", "position_ids"):
            assert torch.equal(slots[key][b, :n], plain[key][b, :n]), key
        m, m0 = slots["attention_mask_4d"][b, 0], plain["attention_mask_4d"][b, 0]
        assert torch.equal(m[:n, :n], m0[:n, :n]) and not m[:n, n:].any()  # nothing reads the slots
        assert (slots["labels"][b, index] == -100).all()
        read = torch.zeros(m.shape[1], dtype=torch.bool)
        read[:prefix_len] = True
        start, longest = prefix_len, 0
        for length, flag in zip(row, flags[b]):
            if flag:
                read[start:start + length] = True
                longest = max(longest, length)
            start += length
        for k in range(K):
            expect = read.clone()
            expect[n:n + k + 1] = True
            assert torch.equal(m[n + k], expect)
        assert slots["position_ids"][b, index].tolist() == list(range(prefix_len + longest, prefix_len + longest + K))
    assert lengths[1] and slots["position_ids"][1, slots["query_index"][1]].tolist() == list(
        range(prefix_len, prefix_len + K))  # a row with no context block: the queries right after the prefix
    torch.manual_seed(2)
    prefix = torch.randn(2, p, llm.hidden_size)
    with torch.no_grad():
        out = forward_train_with_queries(llm, slots, prefix, model.traj_head.query_embeds(2))
        torch.testing.assert_close(out["loss_lm"], llm.forward_train(plain, prefix)["loss_lm"], rtol=1e-6, atol=1e-6)
    assert out["hidden_queries"].shape == (2, K, llm.hidden_size)
    with pytest.raises(ValueError, match="one flag per block"):
        build_packed_batch(llm.tokenizer, llm.prompt, blocks, p, llm.pad_id, query_slots=K,
                           query_context=[[True], [True]])
    with pytest.raises(ValueError, match="no query slots"):
        forward_train_with_queries(llm, plain, prefix, model.traj_head.query_embeds(2))


@pytest.mark.parametrize("mode", ["full", "three_rounds"])
def test_teacher_forced_training_states_equal_the_cached_inference_pass(tiny_world, mode):
    """The queries' states of the packed training forward (ground-truth answers) equal those of the
    one cached inference pass over [prefix cache, context rounds with the same answers, queries],
    with the prompt cache per frame or shared across frames."""
    cfg = _cfg()
    model = _model(cfg, traj_placement="after_qa", qa_policy=dict(mode=mode)).eval()
    data = _train_batch(model, tiny_world, cfg)
    samples = data["data_samples"]
    with torch.no_grad():
        prefix = model(**data, mode="tensor")
        vis, _ = model.visual_tokens(data["inputs"]["imgs"], samples)
        assert prefix.shape[1] == vis.shape[1] + 1  # [visual][ego]: the queries left the prefix
        blocks = [blocks_for_policy(s.qa, model.qa_policy) for s in samples]
        flags = [context_flags(s.qa, model.qa_policy) for s in samples]
        assert flags == ([[True, True, True], [True, True, False]] if mode == "full" else [[True, True], [True, False]])
        train = model._lm_loss_by_adapter(blocks, prefix, samples, context=flags)
        for share in (False, True):
            model.set_test_cfg(dict(share_prompt_cache=share))
            for i, s in enumerate(samples):
                cache = model.llm.prefill(prefix[i:i + 1])
                n_cached = cache.past_key_values.get_seq_length()
                ctx = context_blocks(s.qa, model.qa_policy)
                hidden, tokens = hidden_after_blocks(model.llm, cache, ctx, model.traj_head.query_embeds(1))
                torch.testing.assert_close(hidden[0], train["hidden_queries"][i], rtol=1e-5, atol=1e-5)
                assert cache.past_key_values.get_seq_length() == n_cached  # the frame's cache is not mutated
                assert tokens == K + sum(len(sum(block_ids(model.llm.tokenizer, model.llm.prompt, q, a), []))
                                         for q, a in ctx)


def test_trajectory_reads_perception_and_prediction_answers_only(tiny_world):
    """after_qa: changing a perception or a prediction answer changes the trajectory, changing a
    planning or behavior answer does not (in training with the ground truth, and at test time with
    the answers given to the pass); the prefix head reads no answer at all."""
    cfg = _cfg()
    model = _model(cfg, traj_placement="after_qa").eval()
    data = _train_batch(model, tiny_world, cfg)

    def traj_loss(m, change):
        d = copy.deepcopy(data)
        qa = d["data_samples"][1].qa[change]
        qa.answer = qa.answer + " And a truck behind."
        with torch.no_grad():
            return m(**d, mode="loss")["loss_traj"]

    with torch.no_grad():
        base = model(**data, mode="loss")["loss_traj"]
    assert traj_loss(model, 0) != base  # perception answer of sample 1
    torch.testing.assert_close(traj_loss(model, 2), base, rtol=1e-6, atol=1e-6)  # its planning answer: not read
    prefix_model = _model(cfg).eval()
    with torch.no_grad():
        prefix_base = prefix_model(**data, mode="loss")["loss_traj"]
    assert torch.equal(traj_loss(prefix_model, 0), prefix_base)

    frame = _dataset(tiny_world, cfg, queue_length=1, qa_mode="frame")
    pdata = model.data_preprocessor(pseudo_collate([frame[0]]), False)
    sample = pdata["data_samples"][0]
    first = {}
    for qa in sample.qa:
        first.setdefault(qa.stage, qa)
    assert set(first) == {"perception", "prediction", "planning", "behavior"}
    with torch.no_grad():
        prefix = model(**pdata, mode="tensor")
        cache = model.llm.prefill(prefix)
        answers = {qa.index: qa.answer for qa in sample.qa}
        model._predict_traj_after_qa(sample, cache, answers)
        ref = sample.pred_traj.clone()
        for stage, qa in first.items():
            changed = {**answers, qa.index: "No, there is nothing there."}
            model._predict_traj_after_qa(sample, cache, changed)
            if stage in CONTEXT_STAGES:
                assert not torch.allclose(sample.pred_traj, ref, atol=1e-6), stage
            else:
                assert torch.equal(sample.pred_traj, ref), stage
        model._predict_traj_after_qa(sample, cache, answers)
        assert torch.equal(sample.pred_traj, ref)  # the cache was left as it was


def test_after_qa_training_loss_and_gradients(tiny_world):
    """The loss is finite; gradients reach the query tokens, the head's MLP, the LoRA weights and
    the pixels; the LM loss is that of the same blocks without the query slots."""
    cfg = _cfg()
    model = _model(cfg, traj_placement="after_qa").train()
    data = _train_batch(model, tiny_world, cfg)
    losses = model(**data, mode="loss")
    assert set(losses) == {"vis_norm", "loss_lm", "loss_traj", "loss_heatmap", "loss_occ"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert model.traj_head.queries.grad is not None and bool((model.traj_head.queries.grad.abs().sum(-1) > 0).all())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.traj_head.mlp.parameters())
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert sum(p.grad.abs().sum() for p in model.img_backbone.parameters() if p.grad is not None) > 0
    model.eval()
    with torch.no_grad():
        losses = model(**data, mode="loss")
        prefix = model(**data, mode="tensor")
        blocks = [blocks_for_policy(s.qa, model.qa_policy) for s in data["data_samples"]]
        plain = model.llm.forward_train(model.llm.build_batch(blocks, prefix.shape[1]), prefix)["loss_lm"]
    torch.testing.assert_close(losses["loss_lm"], plain, rtol=1e-6, atol=1e-6)


def test_after_qa_with_domain_adapters(tiny_world):
    """Multi-LoRA: samples of two domains go through their adapters in separate groups; each
    sample's query states are those of the sample alone."""
    cfg = _cfg()
    llm = dict(cfg.model.llm, adapter_names=["day", "night"])
    model = _model(cfg, llm=llm, domain_adapters={"day": "day", "night": "night"}, traj_placement="after_qa").eval()
    _talkative(model)
    data = _train_batch(model, tiny_world, cfg)
    data["data_samples"][0].set_metainfo({"domain": "day"})
    data["data_samples"][1].set_metainfo({"domain": "night"})
    samples = data["data_samples"]
    with torch.no_grad():
        prefix = model(**data, mode="tensor")
        blocks = [blocks_for_policy(s.qa, model.qa_policy) for s in samples]
        flags = [context_flags(s.qa, model.qa_policy) for s in samples]
        both = model._lm_loss_by_adapter(blocks, prefix, samples, context=flags)
        for i in (1, 0):
            alone = model._lm_loss_by_adapter(blocks[i:i + 1], prefix[i:i + 1], samples[i:i + 1],
                                              context=flags[i:i + 1])
            torch.testing.assert_close(both["hidden_queries"][i], alone["hidden_queries"][0], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(both["hidden_queries"][0], both["hidden_queries"][1])
        assert torch.isfinite(model(**data, mode="loss")["loss_traj"])


def test_after_qa_predict_on_the_test_split(tiny_world):
    """Predict on the official test-format questions of a val frame: answers for every question, a
    [6, 2] trajectory where the prefix head puts it (scored by the planning metric), and the tokens
    of the trajectory pass in the efficiency record."""
    cfg = _cfg()
    model = _talkative(_model(cfg, traj_placement="after_qa").eval())
    ds = _dataset(tiny_world, cfg, split="val", queue_length=1, qa_mode="frame", qa_select="test")
    data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    with torch.no_grad():
        out = model(**copy.deepcopy(data), mode="predict")[0]
    assert set(out.pred_answers) == {qa.index for qa in out.qa}
    assert tuple(out.pred_traj.shape) == (cfg.model.traj_head.horizon, 2) == tuple(out.gt_traj.shape)
    assert torch.isfinite(out.pred_traj).all()
    ctx = context_blocks(out.qa, model.qa_policy, out.pred_answers)
    assert len(ctx) == sum(qa.stage in CONTEXT_STAGES for qa in out.qa) > 0
    eff = out.efficiency
    assert eff["traj_tokens"] == 0 and eff["traj_context_tokens"] == K + sum(
        len(sum(block_ids(model.llm.tokenizer, model.llm.prompt, q, a), [])) for q, a in ctx)
    assert eff["prefix_tokens"] == model(**data, mode="tensor").shape[1] and eff["traj_s"] > 0
    metric = PlanningMetric()
    metric.process({}, [out.to_dict()])
    assert "L2_avg_stp3" in metric.compute_metrics(metric.results)
    # FastV: the pass continues a pruned prefix cache (fewer cached entries than positions)
    model.set_test_cfg(dict(pruning=dict(fastv_keep_ratio=0.5, fastv_layer=1)))
    model.reset_test_state()
    with torch.no_grad():
        pruned = model(**copy.deepcopy(data), mode="predict")[0]
    assert pruned.pred_traj.shape == out.pred_traj.shape and torch.isfinite(pruned.pred_traj).all()
    assert not torch.equal(pruned.pred_traj, out.pred_traj)


def test_lossless_variant_gives_the_greedy_answers_and_trajectory(tiny_world):
    """Plain batch-1 greedy, batched greedy and the lossless variant (shared prompt cache + batched
    speculative decoding with the training answers' datastore) give the same answers, and the same
    trajectory, computed from those answers."""
    cfg = _cfg()
    base = _talkative(_model(cfg, traj_placement="after_qa").eval())
    train = _dataset(tiny_world, cfg, queue_length=1, qa_per_sample=8)
    lossless = Config.fromfile(f"{REPO}/configs/benchmarks/default.py").variants["lossless"].to_dict()
    ds = _dataset(tiny_world, cfg, split="val", queue_length=1, qa_mode="frame", qa_select="test")
    data = base.data_preprocessor(pseudo_collate([ds[0]]), False)
    outs = {}
    for name, spec in (("greedy", dict(batch_questions=False)), ("batched", dict(batch_questions=True)),
                       ("lossless", lossless)):
        model = build_variant(base, spec, log=lambda *_: None,
                              train_qa=[entry["qa"] for entry in train.data_list])
        with torch.no_grad():
            outs[name] = model(**copy.deepcopy(data), mode="predict")[0]
    ref = outs["greedy"]
    assert any(ref.pred_answers.values())
    assert outs["batched"].pred_answers == ref.pred_answers and torch.equal(outs["batched"].pred_traj, ref.pred_traj)
    fast = outs["lossless"]
    assert fast.pred_answers == ref.pred_answers
    torch.testing.assert_close(fast.pred_traj, ref.pred_traj, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the lossless trajectory is the one of its answers on a plain prefix cache
        sample = copy.deepcopy(data["data_samples"][0])
        base._predict_traj_after_qa(sample, base.llm.prefill(base(**data, mode="tensor")), fast.pred_answers)
    torch.testing.assert_close(fast.pred_traj, sample.pred_traj, rtol=1e-5, atol=1e-5)


def test_config_sweep_and_refused_settings():
    cfg = Config.fromfile(f"{REPO}/configs/ablations/bev_vlm_traj-after-qa.py")
    default = Config.fromfile(f"{REPO}/configs/bev_vlm.py")
    assert cfg.model.traj_placement == "after_qa"
    # the placement, and no plan line (it needs the prefix head): the default's model otherwise
    assert cfg.model.plan_text is None
    assert {k: v for k, v in cfg.model.to_dict().items() if k not in ("traj_placement", "plan_text")} == \
        {k: v for k, v in default.model.to_dict().items() if k != "plan_text"}
    sweep = Config.fromfile(f"{REPO}/configs/sweeps/trajectory.py").sweep
    assert "configs/ablations/bev_vlm_traj-after-qa.py" in sweep.configs and sweep.configs[0] == "configs/bev_vlm.py"
    tiny = _cfg()
    with pytest.raises(ValueError, match="traj_placement must be one of"):
        _model(tiny, traj_placement="middle")
    with pytest.raises(ValueError, match="traj_source='head'"):
        _model(tiny, traj_head=None, traj_source="text", traj_placement="after_qa")
    with pytest.raises(ValueError, match="'single'"):
        _model(tiny, traj_placement="after_qa", qa_policy=dict(mode="single"))
    model = _model(tiny, traj_placement="after_qa")
    with pytest.raises(ValueError, match="'single'"):
        model.set_qa_policy(dict(mode="single"))
    assert model.qa_policy.mode == "full"  # a refused policy leaves the model as it was
    assert _model(tiny, qa_policy=dict(mode="single")).traj_placement == "prefix"  # the prefix head takes any


@pytest.mark.parametrize("placement", ["prefix", "after_qa"])
def test_ego_prior_in_training_and_predict(tiny_world, placement):
    """With the direct ego-status path the training loss and the predicted trajectory use the
    frame's ego status through the head (the same head output in both), the path gets gradient,
    and a model without ego status refuses it."""
    cfg = _cfg()
    head = dict(cfg.model.traj_head.to_dict(), ego_prior_dims=5, kinematic_prior=None)  # the ego path alone
    model = _model(cfg, traj_head=head, traj_placement=placement)
    data = _train_batch(model, tiny_world, cfg)
    losses = model(**data, mode="loss")
    losses["loss_traj"].backward()
    assert model.traj_head.ego_prior[0].weight.grad.abs().sum() > 0
    model = _talkative(model).eval()
    model.set_test_cfg(dict(stream_temporal=False))
    frame = _dataset(tiny_world, cfg, queue_length=1, qa_mode="frame")
    pdata = model.data_preprocessor(pseudo_collate([frame[0]]), False)
    with torch.no_grad():
        out = model(**copy.deepcopy(pdata), mode="predict")[0]
        sample = copy.deepcopy(pdata["data_samples"][0])
        cache = model.llm.prefill(model(**pdata, mode="tensor"))
        if placement == "prefix":
            hidden = cache.hidden_prefix[:, -K:]
        else:
            hidden, _ = hidden_after_blocks(model.llm, cache, context_blocks(sample.qa, model.qa_policy, out.pred_answers),
                                            model.traj_head.query_embeds(1))
        ref = model.traj_head(hidden, sample.ego_status[None])[0]
        moved = model.traj_head(hidden, sample.ego_status[None] + 1.0)[0]
    torch.testing.assert_close(out.pred_traj, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(moved, ref)  # the ego status reaches the trajectory
    with pytest.raises(ValueError, match="use_ego_status=True"):
        _model(cfg, traj_head=head, use_ego_status=False)
    with pytest.raises(ValueError, match=r"ego_status_dims \(4\)"):
        _model(cfg, traj_head=head, ego_status_dims=4)
