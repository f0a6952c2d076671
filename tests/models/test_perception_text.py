"""Detections as text in the prefix (bevlm.models.heads.perception_text): the projection reproduces the
world's own c-tags, the line has the answers' format and a fixed length, and the model places exactly
those token embeddings after the visual tokens."""
import copy
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.evaluation.drivelm_official import match_result
from bevlm.models.heads.perception_text import PerceptionText, project_to_cameras
from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)

TAG = re.compile(r"<c\d+,(CAM_[A-Z_]+),([\d.]+),([\d.]+)>")


def _cfg():
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    cfg.model.det_head = dict(type="CenterPointHead", embed_dims=32, num_classes=10, bev_h=8, bev_w=8,
                              pc_range=(-32.0, -32.0, -3.0, 32.0, 32.0, 3.0), hidden_dims=16,
                              score_threshold=0.0)
    cfg.model.perception_text = dict(score_thr=0.0, max_objects=4, num_tokens=48)
    return cfg


def _samples(world, cfg, n=4, split="val"):
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{world}/infos/bevlm_infos_{split}.pkl",
                             data_root=f"{world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    model = MODELS.build(cfg.model.to_dict())
    data = model.data_preprocessor(pseudo_collate([ds[i] for i in range(n)]), False)
    return model, data


def test_projection_reproduces_the_worlds_c_tags(tiny_world):
    """Every key agent's c-tag is the projection of a ground-truth box centre into the tag's camera,
    scaled from the network image to the stored image (within 0.5 px: the tags are rounded to 0.1)."""
    cfg = _cfg()
    _, data = _samples(tiny_world, cfg)
    checked = 0
    for s in data["data_samples"]:
        sy = s.ori_shape[0] / s.img_shape[0]
        sx = s.ori_shape[1] / s.img_shape[1]
        for tag, info in s.key_object_infos.items():
            if info["Category"] == "Traffic element":
                continue
            cam, x, y = TAG.match(tag).groups()
            n = list(s.cam_names).index(cam)
            p = torch.cat([s.gt_boxes[:, :3].double(), torch.ones(len(s.gt_boxes), 1).double()], 1) @ \
                s.ego2img[-1][n].double().T
            uv = p[:, :2] / p[:, 2:3]
            dist = (uv[:, 0] * sx - float(x)).abs() + (uv[:, 1] * sy - float(y)).abs()
            dist[p[:, 2] <= 0] = float("inf")
            assert float(dist.min()) < 0.5, (tag, float(dist.min()))
            checked += 1
    assert checked >= 4


def test_camera_choice_is_the_one_that_sees_the_point_nearest_its_centre():
    """Two hand-made pinhole cameras looking along +x and +y: a point ahead goes to the first, one to
    the left to the second, one behind to none; the pixel is K [R|t] p / depth."""
    k = torch.tensor([[100.0, 0, 50], [0, 100.0, 25], [0, 0, 1]])
    # camera looking along ego +x (camera z = ego x, camera x = -ego y, camera y = -ego z)
    r_front = torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])
    r_left = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # looking along ego +y
    mats = []
    for r in (r_front, r_left):
        m = torch.eye(4)
        m[:3, :3] = k @ r
        mats.append(m)
    ego2img = torch.stack(mats)
    pts = torch.tensor([[10.0, 1.0, 0.0], [1.0, 10.0, 0.0], [-10.0, 0.0, 0.0]])
    cam, uv = project_to_cameras(pts, ego2img, (50, 100))
    assert cam.tolist() == [0, 1, -1]
    torch.testing.assert_close(uv[0], torch.tensor([50.0 - 100 * 1 / 10, 25.0]))
    torch.testing.assert_close(uv[1], torch.tensor([50.0 + 100 * 1 / 10, 25.0]))


def test_line_format_fixed_length_and_the_match_metric_reads_only_the_tags():
    """The line names each object with a c-tag in the answers' format; the official match metric finds
    exactly those pixels in it (distances are whole metres); token ids are exactly num_tokens long,
    dropping the farthest objects that do not fit and padding the rest."""
    from bevlm.models.llm.hf_causal_lm import HFCausalLM  # noqa: F401  (registers the builder)

    objs = [("car", 9.4, "CAM_FRONT", 119.04, 106.1), ("truck", 21.0, "CAM_BACK", 237.1, 113.2)]
    line = PerceptionText.describe(objs)
    assert line == "Detected: car 9 m <c1,CAM_FRONT,119.0,106.1>; truck 21 m <c2,CAM_BACK,237.1,113.2>."
    gt = "The IDs are <c1,CAM_FRONT,119.0,106.1> and <c2,CAM_BACK,237.1,113.2>."
    res = match_result(line, gt)
    assert res.f1 == pytest.approx(1.0, abs=1e-6) and res.false_positives == 0
    assert PerceptionText.describe([]) == "Detected: nothing."

    class Tok:  # one id per character: lengths are easy to reason about
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    pt = PerceptionText(num_tokens=len(line) + 3)
    ids = pt.token_ids(objs, Tok())
    assert ids == [ord(c) for c in line] + [ord("\n")] * 3
    short = PerceptionText(num_tokens=len(PerceptionText.describe(objs[:1])) + 1)
    ids = short.token_ids(objs, Tok())  # the truck no longer fits: the line keeps the car
    assert "".join(map(chr, ids)) == PerceptionText.describe(objs[:1]) + "\n"
    with pytest.raises(ValueError, match="not detection classes"):
        PerceptionText(classes=("car", "traffic_light"))


def test_prefix_holds_the_lines_token_embeddings_after_the_visual_tokens(tiny_world):
    """The prefix grows by num_tokens; those rows are the LLM's input embeddings of the line's token
    ids (the objects the head decoded, nearest first, within the score and range limits)."""
    cfg = _cfg()
    model, data = _samples(tiny_world, cfg, n=2)
    model.eval()
    plain = copy.deepcopy(cfg)
    del plain.model["det_head"], plain.model["perception_text"]
    torch.manual_seed(0)
    base = MODELS.build(plain.model.to_dict()).eval()
    d = copy.deepcopy(data)
    with torch.no_grad():
        prefix = model(**d, mode="tensor")
        ref = base(**copy.deepcopy(data), mode="tensor")
        vis, bev = model.visual_tokens(data["inputs"]["imgs"], data["data_samples"])
    n_vis, n_txt = vis.shape[1], cfg.model.perception_text["num_tokens"]
    assert prefix.shape[1] == ref.shape[1] + n_txt
    for i, s in enumerate(d["data_samples"]):
        ids = model.perception_text.token_ids(s.perception_objects, model.llm.tokenizer)
        assert len(ids) == n_txt
        emb = model.llm.lm.get_input_embeddings()(torch.tensor(ids))
        torch.testing.assert_close(prefix[i, n_vis:n_vis + n_txt], emb.to(prefix.dtype))
        dists = [o[1] for o in s.perception_objects]
        assert dists == sorted(dists) and len(dists) <= 4
        assert s.perception_text.startswith("Detected: ")
    assert any(s.perception_objects for s in d["data_samples"])
    torch.testing.assert_close(prefix[:, :n_vis], vis)


def test_the_line_is_embedded_through_a_quantised_table(tiny_world):
    """With the LLM's embedding table in int4 (a QuantEmbedding4: codes, no float .weight) the line's
    rows are that table's rows of the line's ids: what the int4 variants of the default test with."""
    from bevlm.inference.quantization import QuantEmbedding4

    cfg = _cfg()
    model, data = _samples(tiny_world, cfg, n=2)
    model.eval()
    lm = model.llm.lm
    table = QuantEmbedding4.from_embedding(lm.get_input_embeddings(), 32)
    lm.set_input_embeddings(table)
    d = copy.deepcopy(data)
    with torch.no_grad():
        prefix = model(**d, mode="tensor")
        n_vis = model.visual_tokens(data["inputs"]["imgs"], data["data_samples"])[0].shape[1]
    n_txt = cfg.model.perception_text["num_tokens"]
    for i, s in enumerate(d["data_samples"]):
        ids = torch.tensor(model.perception_text.token_ids(s.perception_objects, model.llm.tokenizer))
        torch.testing.assert_close(prefix[i, n_vis:n_vis + n_txt], table.dequantized_weight()[ids].to(prefix.dtype))


def test_training_step_leaves_the_detection_head_frozen_and_predict_answers(tiny_world):
    """Training: finite losses, no gradient and eval mode for the detection head, gradients elsewhere.
    Test: every question answered, with the same answers under the lossless decoding stack."""
    cfg = _cfg()
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.to_dict()).train()
    assert not model.det_head.training
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    losses = model(**data, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert all(p.grad is None for p in model.det_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())

    model.eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    val = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                              data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    pdata = model.data_preprocessor(pseudo_collate([val[0]]), False)
    model.set_test_cfg(dict(stream_temporal=False))
    with torch.no_grad():
        greedy = model(**copy.deepcopy(pdata), mode="predict")[0].pred_answers
    model.set_test_cfg(dict(share_prompt_cache=True,  # prompt lookup drafts, batched verification
                            speculative=dict(skip_layers=[], use_layer_skip=False, draft_len=4, ngram_min_n=2,
                                             use_ngram=True, batched=True)))
    model.reset_test_state()
    seen = []  # what prompt lookup was given of the prefix's text: the frame's detections line
    looked_up = model.frame_decoder.prefix_lookup_ids
    model.frame_decoder.prefix_lookup_ids = lambda cache: seen.append(looked_up(cache)) or seen[-1]
    with torch.no_grad():
        out = model(**copy.deepcopy(pdata), mode="predict")[0]
    fast = out.pred_answers
    assert set(greedy) == {qa.index for qa in pdata["data_samples"][0].qa}
    assert fast == greedy
    line = model.perception_text.line_ids(out.perception_objects, model.llm.tokenizer)
    assert seen and all(ids == line for ids in seen)
    # the objects that fit the line's token budget (perception_text lists every one the head kept)
    assert out.perception_text.startswith(model.llm.tokenizer.decode(line)[:-1])


def test_bad_configurations_are_refused():
    cfg = _cfg()
    m = cfg.model.to_dict()
    with pytest.raises(ValueError, match="go together"):
        MODELS.build(dict(m, perception_text=None))
    with pytest.raises(ValueError, match="needs vision='bev'"):
        MODELS.build(dict(m, vision="camera", projector=dict(type="ResamplerProjector", in_dims=32, num_queries=4,
                                                            num_layers=1, num_heads=4)))


def test_motion_word_follows_the_detected_speed():
    """With ``motion_speed`` each object gets ``moving`` at a detected speed >= the threshold and
    ``stopped`` below it (speed = |(vx, vy)| of the box), written after its distance; without it the
    objects and the line are those of the plain format."""
    from types import SimpleNamespace

    k = torch.tensor([[100.0, 0, 50], [0, 100.0, 25], [0, 0, 1]])
    m = torch.eye(4)
    m[:3, :3] = k @ torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])  # one camera along ego +x
    sample = SimpleNamespace(ego2img=m[None, None], img_shape=(50, 100), ori_shape=(100, 200), cam_names=["CAM_FRONT"])
    # (x, y, z, l, w, h, yaw, vx, vy): 3 m/s, 0.3 m/s, exactly the threshold (0.5 m/s along y)
    boxes = torch.tensor([[10.0, 1.0, 0, 4, 2, 1.5, 0, 3.0, 0.0], [20.0, -1.0, 0, 4, 2, 1.5, 0, 0.3, 0.0],
                          [30.0, 0.0, 0, 4, 2, 1.5, 0, 0.0, 0.5]])
    det = {"bboxes_3d": boxes, "scores_3d": torch.tensor([0.9, 0.8, 0.7]), "labels_3d": torch.tensor([0, 1, 0])}
    objs = PerceptionText(motion_speed=0.5).objects(det, sample)
    assert [o[5] for o in objs] == ["moving", "stopped", "moving"]
    line = PerceptionText.describe(objs)
    assert line.startswith("Detected: car 10 m moving <c1,CAM_FRONT,") and "; truck 20 m stopped <c2,CAM_FRONT," in line
    plain = PerceptionText().objects(det, sample)
    assert [o[:5] for o in objs] == plain and all(len(o) == 5 for o in plain)
    assert " m <c1," in PerceptionText.describe(plain)
    # the match metric still reads only the tags' pixels
    gt = " ".join(re.findall(r"<c\d+,[^>]+>", line))
    assert match_result(line, gt).f1 == pytest.approx(1.0, abs=1e-6)
    # boxes without velocity columns: stopped
    det7 = dict(det, bboxes_3d=boxes[:, :7])
    assert [o[5] for o in PerceptionText(motion_speed=0.5).objects(det7, sample)] == ["stopped"] * 3
    with pytest.raises(ValueError, match="motion_speed"):
        PerceptionText(motion_speed=0.0)
