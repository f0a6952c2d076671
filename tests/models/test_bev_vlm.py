"""The assembled BEV-VLM on the tiny config: losses, gradients, prediction, streaming temporal state."""
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.registry import DATASETS, MODELS
from bevlm.structures import is_history_only, scored_samples
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)


def _cfg():
    return Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")


def _dataset(world, cfg, **kw):
    return DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{world}/infos/bevlm_infos_train.pkl",
                               data_root=f"{world}/", pipeline=cfg.pipeline, **kw))


def _model(cfg, **overrides):
    torch.manual_seed(0)
    mcfg = cfg.model.to_dict()
    mcfg.update(overrides)
    return MODELS.build(mcfg)


@pytest.mark.parametrize("vision", ["bev", "camera", "blind"])
def test_loss_and_gradients(tiny_world, vision):
    cfg = _cfg()
    extra = {}
    if vision == "camera":
        extra["projector"] = dict(type="ResamplerProjector", in_dims=32, num_queries=4)
    model = _model(cfg, vision=vision, **extra)
    ds = _dataset(tiny_world, cfg, queue_length=2, qa_per_sample=3)
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[5]]), True)
    losses = model(**data, mode="loss")
    expected = {"loss_lm", "loss_traj"} | ({"loss_heatmap", "loss_occ"} if vision == "bev" else set())
    # the visual tokens' mean norm is logged beside the losses (no 'loss' in its key: not optimised)
    assert set(losses) == expected | ({"vis_norm"} if vision != "blind" else set())
    assert all(torch.isfinite(v) for v in losses.values())
    if vision != "blind":
        assert not losses["vis_norm"].requires_grad and losses["vis_norm"] > 0
    sum(v for k, v in losses.items() if "loss" in k).backward()
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    if vision != "blind":
        grads = [p.grad for p in model.img_backbone.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0  # the LLM loss reaches the pixels
    base = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad for p in base)


@pytest.mark.parametrize("vision", ["bev", "blind"])
def test_prompt_tokens_follow_the_visual_tokens_and_train(tiny_world, vision):
    cfg = _cfg()
    ds = _dataset(tiny_world, cfg, queue_length=2, qa_per_sample=3)
    data_plain = None
    lengths = {}
    for k in (0, 3):
        model = _model(cfg, vision=vision, num_prompt_tokens=k)
        data = model.data_preprocessor(pseudo_collate([ds[0], ds[5]]), True)
        vis, _ = model.visual_tokens(data["inputs"]["imgs"], data["data_samples"])
        prefix = model.build_prefix(vis, data["data_samples"])
        lengths[k] = prefix.shape[1]
        if k == 0:
            data_plain = prefix
            continue
        n_vis = 0 if vis is None else vis.shape[1]
        # [visual][prompt][ego][traj]: the visual slice is unchanged, the prompt rows are the parameter
        torch.testing.assert_close(prefix[:, :n_vis], data_plain[:, :n_vis])
        torch.testing.assert_close(prefix[:, n_vis:n_vis + 3], model.prompt_embed.expand(2, -1, -1))
        vocab = model.llm.lm.get_input_embeddings().weight.float()
        assert all(any(torch.equal(row, v) for v in vocab) for row in model.prompt_embed.detach())
        losses = model(**data, mode="loss")
        sum(v for key, v in losses.items() if "loss" in key).backward()
        assert model.prompt_embed.grad is not None and model.prompt_embed.grad.abs().sum() > 0
    assert lengths[3] == lengths[0] + 3
    with pytest.raises(ValueError, match="num_prompt_tokens must be >= 0"):
        _model(cfg, num_prompt_tokens=-1)


def test_predict_outputs_and_efficiency(tiny_world):
    cfg = _cfg()
    model = _model(cfg).eval()
    ds = _dataset(tiny_world, cfg, queue_length=1, qa_mode="frame")
    out = model(**model.data_preprocessor(pseudo_collate([ds[0]]), False), mode="predict")[0]
    assert set(out.pred_answers) == {qa.index for qa in out.qa}
    # one (x, y) per waypoint of the head's horizon, aligned with the ground truth it is scored on
    assert tuple(out.pred_traj.shape) == (cfg.model.traj_head.horizon, 2) == tuple(out.gt_traj.shape)
    eff = out.efficiency
    assert eff["questions"] == len(out.qa) and eff["encoder"] > 0 and eff["prefill"] > 0
    assert {"encoder_s", "prefill_s", "decode_s"} <= set(eff)


def test_batched_and_sequential_answers_agree(tiny_world):
    cfg = _cfg()
    model = _model(cfg).eval()
    ds = _dataset(tiny_world, cfg, queue_length=1, qa_mode="frame")
    data = model.data_preprocessor(pseudo_collate([ds[1]]), False)
    a = model(**data, mode="predict")[0].pred_answers
    model.set_test_cfg(dict(batch_questions=False))
    model.temporal_cache.reset()
    b = model(**data, mode="predict")[0].pred_answers
    assert a == b


def test_streaming_equals_queue_on_second_frame(tiny_world):
    """Streaming frame 0 then frame 1 (cached BEV, warped by ego motion) gives the same BEV as
    the T=2 queue [frame 0, frame 1]; after a scene change the cache is not used."""
    cfg = _cfg()
    model = _model(cfg).eval()
    queue_ds = _dataset(tiny_world, cfg, queue_length=2, qa_mode="none", require_qa=False)
    stream_ds = _dataset(tiny_world, cfg, queue_length=1, qa_mode="none", require_qa=False)
    assert queue_ds.frames[1]["prev"] == queue_ds.frames[0]["token"]
    with torch.no_grad():
        q = model.data_preprocessor(pseudo_collate([queue_ds[1]]), False)
        bev_queue = model.encode_bev(q["inputs"]["imgs"], q["data_samples"])
        model.temporal_cache.reset()
        for i in (0, 1):
            s = model.data_preprocessor(pseudo_collate([stream_ds[i]]), False)
            bev_stream = model.encode_bev(s["inputs"]["imgs"], s["data_samples"], streaming=True)
        torch.testing.assert_close(bev_stream, bev_queue, atol=1e-5, rtol=1e-5)
        # the same frame without history differs (the temporal path matters)
        model.temporal_cache.reset()
        bev_alone = model.encode_bev(s["inputs"]["imgs"], s["data_samples"], streaming=True)
        assert not torch.allclose(bev_alone, bev_queue, atol=1e-4)
        # a frame of another scene right after: no cache hit, same as computing it alone
        val_ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                                     data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1,
                                     qa_mode="none", require_qa=False))
        other = next(i for i, f in enumerate(val_ds.frames) if f["prev"])
        assert val_ds.frames[other]["scene_token"] != stream_ds.frames[1]["scene_token"]
        model.temporal_cache.reset()
        model.encode_bev(s["inputs"]["imgs"], s["data_samples"], streaming=True)  # cache: scene of frame 1
        o = model.data_preprocessor(pseudo_collate([val_ds[other]]), False)
        bev_other = model.encode_bev(o["inputs"]["imgs"], o["data_samples"], streaming=True)
        model.temporal_cache.reset()
        torch.testing.assert_close(
            bev_other, model.encode_bev(o["inputs"]["imgs"], o["data_samples"], streaming=True))


def test_frame_tokens_fusion(tiny_world):
    """Image-level temporal input: T frames' tokens side by side; the last frame alone matches
    the single-frame tokens; padding frames give zero tokens; the loss reaches the pixels."""
    cfg = _cfg()
    enc = dict(cfg.model.bev_encoder, use_temporal=False)
    model = _model(cfg, temporal_fusion="tokens", num_frames=2, bev_encoder=enc)
    ds = _dataset(tiny_world, cfg, queue_length=2, qa_per_sample=3)
    first = next(i for i in range(len(ds)) if not ds.frames[ds.data_list[i]["frame"]].get("prev"))
    later = next(i for i in range(len(ds)) if ds.frames[ds.data_list[i]["frame"]].get("prev"))
    data = model.data_preprocessor(pseudo_collate([ds[first], ds[later]]), True)
    imgs, samples = data["inputs"]["imgs"], data["data_samples"]
    model.eval()
    with torch.no_grad():
        vis, bev = model.visual_tokens(imgs, samples)
        n = model.projector(bev).shape[1]
        assert vis.shape == (2, 2 * n, model.llm.hidden_size)
        assert torch.count_nonzero(vis[0, :n]) == 0 and torch.count_nonzero(vis[1, :n]) > 0  # padded history
        alone = model.projector(model._frame_bev(imgs[:, -1], torch.stack([s.ego2img for s in samples])[:, -1],
                                                 tuple(samples[0].img_shape), None, None))
        torch.testing.assert_close(vis[:, n:], alone + model.frame_embed[1])
    model.train()
    losses = model(**data, mode="loss")
    sum(losses.values()).backward()
    assert model.frame_embed.grad is not None and bool((model.frame_embed.grad.abs().sum(-1) > 0).all())
    assert sum(p.grad.abs().sum() for p in model.img_backbone.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="use_temporal"):
        _model(cfg, temporal_fusion="tokens", num_frames=2)
    with pytest.raises(ValueError, match="queue"):
        model.eval()
        model.visual_tokens(imgs[:, -1:], samples)


def test_text_trajectory_round_trip_and_model(tiny_world):
    from bevlm.models.heads.text_trajectory import format_waypoints, parse_waypoints

    traj = torch.tensor([[1.0, 0.0], [2.04, -0.1], [3.0, 0.26], [4.5, 1.0], [6.0, 2.0], [7.5, -3.25]])
    text = format_waypoints(traj)
    assert text.startswith("[(1.0, 0.0), (2.0, -0.1), (3.0, 0.3)")
    back, ok = parse_waypoints(text)
    assert ok and torch.allclose(back, traj, atol=0.05 + 1e-6)
    short, ok = parse_waypoints("[(1.0, 0.5), (2.0")
    assert not ok and short.shape == (6, 2) and short[1:].eq(torch.tensor([1.0, 0.5])).all()
    assert parse_waypoints("no numbers")[0].abs().sum() == 0

    cfg = _cfg()
    model = _model(cfg, traj_head=None, traj_source="text",
                   test_cfg=dict(max_new_tokens=2, traj_max_new_tokens=5))
    ds = _dataset(tiny_world, cfg, queue_length=1, qa_per_sample=2)
    data = model.data_preprocessor(pseudo_collate([ds[0]]), True)
    losses = model(**data, mode="loss")
    assert "loss_traj" not in losses and torch.isfinite(losses["loss_lm"])
    model.eval()
    out = model(**model.data_preprocessor(pseudo_collate([ds[0]]), False), mode="predict")[0]
    assert out.pred_traj.shape == out.gt_traj.shape and out.efficiency["traj_tokens"] >= 1  # scored against it
    with pytest.raises(ValueError, match="traj_source"):
        _model(cfg, traj_head=None, traj_source="head")


def test_domain_adapters_switch_per_sample(tiny_world):
    """Multi-LoRA: each sample's domain picks its adapter; changing one adapter changes the
    outputs of that domain's samples only; gradients reach only the adapters in the batch."""
    cfg = _cfg()
    llm = dict(cfg.model.llm, adapter_names=["day", "night", "unused"])
    model = _model(cfg, llm=llm, domain_adapters={"day": "day", "night": "night"})
    ds = _dataset(tiny_world, cfg, queue_length=1, qa_per_sample=2, domain="day")
    assert ds[0]["data_samples"].metainfo["domain"] == "day"
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    data["data_samples"][1].set_metainfo({"domain": "night"})

    def per_sample_lm_loss():
        with torch.no_grad():
            model.eval()
            prefix = model(**data, mode="tensor")
            out = []
            for i, s in enumerate(data["data_samples"]):
                blocks = [[(qa.question, qa.answer) for qa in s.qa]]
                out.append(float(model._lm_loss_by_adapter(blocks, prefix[i:i + 1], [s])["loss_lm"]))
            return out

    before = per_sample_lm_loss()
    torch.manual_seed(3)
    for name, p in model.llm.named_parameters():
        if "lora_B.night" in name:
            p.data.add_(torch.randn_like(p) * 0.5)
    after = per_sample_lm_loss()
    assert after[0] == before[0] and after[1] != before[1]
    model.train()
    losses = model(**data, mode="loss")
    losses["loss_lm"].backward()
    grads = {n.split("lora_B.")[-1].split(".")[0] for n, p in model.llm.named_parameters()
             if "lora_B." in n and p.grad is not None and p.grad.abs().sum() > 0}  # (lora_B starts at 0)
    assert grads == {"day", "night"}
    data["data_samples"][0].set_metainfo({"domain": "rain"})
    with pytest.raises(KeyError, match="rain"):
        model(**data, mode="loss")
    with pytest.raises(ValueError, match="adapter_names"):
        _model(cfg, domain_adapters={"day": "nope"})


def test_predict_on_subsampled_split_fills_the_cache_from_the_queue(tiny_world):
    """A frame whose previous frame was never streamed gets it from its T=2 queue: the BEV it
    caches equals the queue computation, and the fill is timed apart (history_s)."""
    cfg = _cfg()
    model = _model(cfg).eval()
    queue_ds = _dataset(tiny_world, cfg, queue_length=2, qa_mode="frame")
    k = next(i for i in range(len(queue_ds)) if queue_ds.frames[queue_ds.data_list[i]["frame"]].get("prev"))
    data = model.data_preprocessor(pseudo_collate([queue_ds[k]]), False)
    with torch.no_grad():
        bev_queue = model.encode_bev(data["inputs"]["imgs"], data["data_samples"])
        model.temporal_cache.reset()
        out = model(**data, mode="predict")[0]
    scene, token = out.scene_token, out.token
    assert model.temporal_cache.holds(scene, token)
    torch.testing.assert_close(model.temporal_cache.latest(scene)[1], bev_queue[0], atol=1e-5, rtol=1e-5)
    assert out.efficiency["history_s"] > 0
    # streamed in order, the cache already holds the previous frame: nothing to fill
    assert model.fill_temporal_cache(data["inputs"]["imgs"], data["data_samples"]) == 1  # (cache: this frame)
    model.temporal_cache.update([scene], [out.prev_token], bev_queue)
    assert model.fill_temporal_cache(data["inputs"]["imgs"], data["data_samples"]) == 0


def test_frozen_vision_modules_get_no_gradient_and_keep_eval_mode(tiny_world):
    cfg = _cfg()
    frozen = ("img_backbone", "img_neck", "bev_encoder")
    model = _model(cfg, frozen=frozen).train()
    assert all(not getattr(model, n).training for n in frozen) and model.projector.training
    before = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] in frozen}
    ds = _dataset(tiny_world, cfg, queue_length=2, qa_per_sample=3)
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[5]]), True)
    losses = model(**data, mode="loss")
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    for name in frozen:
        assert all(p.grad is None and not p.requires_grad for p in getattr(model, name).parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # weights and BN statistics unchanged
    with pytest.raises(ValueError, match=r"frozen names 'llm'.*choose among \['img_backbone'"):
        _model(cfg, frozen=("llm",))


def test_a_subsampled_split_streams_the_skipped_frames_so_scored_frames_match_the_full_split(tiny_world):
    """frame_stride=2 with stream_skipped: the skipped frames are encoded (history only: returned
    unanswered, every metric skips them) and every scored frame gets exactly the answers and
    trajectory it gets on the full split; without them its history is shorter and its trajectory
    differs."""
    cfg = _cfg()
    model = _model(cfg).eval()

    def run(**kw):
        ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                                 data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2,
                                 qa_mode="frame", qa_select="test", test_mode=True, **kw))
        model.temporal_cache.reset()
        out, history = {}, 0
        with torch.no_grad():
            for i in range(len(ds)):
                data = model.data_preprocessor(pseudo_collate([ds[i]]), False)
                res = model(**data, mode="predict")
                assert len(res) == 1  # history-only frames come back unanswered (the test loop needs outputs)
                history += is_history_only(res[0])
                for s in scored_samples(res):
                    out[s.token] = (dict(s.pred_answers), s.pred_traj.clone(), s.efficiency["history_s"])
        return ds, out, history

    full_ds, full, _ = run(frame_stride=1)
    sub_ds, sub, history = run(frame_stride=2, stream_skipped=True)
    assert len(full) == 6 and len(sub_ds) == len(full_ds) and history == 3 and len(sub) == 3
    assert [q["frame_idx"] for q in (sub_ds.get_data_info(i)["queue"][-1] for i in range(6))] == list(range(6))
    for token, (answers, traj, history_s) in sub.items():
        assert answers == full[token][0] and answers
        torch.testing.assert_close(traj, full[token][1], atol=1e-5, rtol=1e-5)
    assert all(h > 0 for _, _, h in list(sub.values())[1:])  # the streamed frames' time, reported apart
    _, short, _ = run(frame_stride=2)  # no streaming of the skipped frames: only the queue's frame
    assert set(short) == set(sub)
    assert any(not torch.allclose(short[t][1], sub[t][1], atol=1e-4) for t in sub)


def test_multiple_choice_by_likelihood_changes_only_the_mc_answers(tiny_world):
    """With test_cfg.multiple_choice='likelihood' the MC questions (official test format) get the letter
    of their likeliest option and every other answer is the decoded one, unchanged."""
    from bevlm.models.qa import choose_by_likelihood, is_multiple_choice

    cfg = _cfg()
    model = _model(cfg).eval()
    ds = _dataset(tiny_world, cfg, queue_length=1, qa_mode="frame", qa_select="test")
    data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    mc = [qa for qa in data["data_samples"][0].qa if is_multiple_choice(qa)]
    assert mc and len(mc) < len(data["data_samples"][0].qa)
    generated = model(**data, mode="predict")[0].pred_answers
    model.set_test_cfg(dict(multiple_choice="likelihood"))
    model.temporal_cache.reset()
    out = model(**data, mode="predict")[0]
    assert set(out.pred_answers) == set(generated) and out.efficiency["mc_scored"] == len(mc)
    for index, answer in out.pred_answers.items():
        if index in {qa.index for qa in mc}:
            assert answer in ("A", "B", "C", "D")
        else:
            assert answer == generated[index]
    # the letters are the argmax over the options, scored on the frame's own prefix
    model.temporal_cache.reset()
    vis, bev = model.visual_tokens(data["inputs"]["imgs"], data["data_samples"])
    cache = model.llm.prefill(model.build_prefix(vis, data["data_samples"]))
    chosen, _ = choose_by_likelihood(model.llm, cache, mc, model.qa_policy)
    assert chosen == {qa.index: out.pred_answers[qa.index] for qa in mc}
