"""Question grounding: each c-tag of a question followed by the detected position of its object."""
from __future__ import annotations

import copy
import re
import types

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.models.heads.perception_text import NUSCENES_CLASSES
from bevlm.models.heads.question_grounding import QuestionGrounding, position_words
from bevlm.registry import DATASETS, MODELS
from bevlm.structures.qa_families import CTAG_RE
from tests.models.test_perception_text import _cfg, _samples

init_default_scope("bevlm")
torch.set_num_threads(1)

GROUNDED = re.compile(r"<c\d+,CAM_[A-Z_]+,[-\d.]+,[-\d.]+> \((\d+ m (ahead|behind), \d+ m (left|right)|not detected)\)")


def test_position_words():
    assert position_words(12.4, 0.6) == "12 m ahead, 1 m left"
    assert position_words(-8.2, -2.9) == "8 m behind, 3 m right"
    assert position_words(0.0, 0.0) == "0 m ahead, 0 m left"


def _gt_dets(sample):
    n = len(sample.gt_boxes)
    return {"bboxes_3d": sample.gt_boxes.clone(), "scores_3d": torch.ones(n), "labels_3d": sample.gt_labels.clone()}


def test_ground_truth_boxes_ground_every_agent_tag(tiny_world):
    """With the ground-truth boxes as detections, every key agent's tag gets the position of the box
    whose centre it is the projection of (the tags are rounded to 0.1 px); traffic lights, not a
    detection class, are not detected."""
    _, data = _samples(tiny_world, _cfg())
    grounding = QuestionGrounding(radius=1.0, score_thr=0.5)
    checked = lights = 0
    for s in data["data_samples"]:
        centres = grounding.candidates(_gt_dets(s))
        sy, sx = s.ori_shape[0] / s.img_shape[0], s.ori_shape[1] / s.img_shape[1]
        for tag, info in s.key_object_infos.items():
            text = grounding.ground(f"Where is {tag}?", centres, s)
            if info["Category"] == "Traffic element":
                assert text == f"Where is {tag} (not detected)?"
                lights += 1
                continue
            m = CTAG_RE.match(tag)
            n = list(s.cam_names).index(m.group(2))
            p = torch.cat([s.gt_boxes[:, :3].double(), torch.ones(len(s.gt_boxes), 1).double()], 1) @ \
                s.ego2img[-1][n].double().T
            uv = p[:, :2] / p[:, 2:3]
            err = (uv[:, 0] * sx - float(m.group(3))).abs() + (uv[:, 1] * sy - float(m.group(4))).abs()
            err[p[:, 2] <= 0] = float("inf")
            box = s.gt_boxes[int(err.argmin())]
            assert text == f"Where is {tag} ({position_words(float(box[0]), float(box[1]))})?"
            checked += 1
    assert checked >= 4


def test_radius_score_and_class_choose_the_candidates(tiny_world):
    _, data = _samples(tiny_world, _cfg(), n=1)
    s = data["data_samples"][0]
    tag = next(t for t, i in s.key_object_infos.items() if i["Category"] != "Traffic element")
    det = _gt_dets(s)
    g = QuestionGrounding(radius=1.0)
    assert "(not detected)" not in g.ground(tag, g.candidates(det), s)
    low = dict(det, scores_3d=torch.full_like(det["scores_3d"], 0.05))  # all below score_thr
    g = QuestionGrounding(radius=1.0, score_thr=0.1)
    assert g.ground(tag, g.candidates(low), s) == f"{tag} (not detected)"
    g = QuestionGrounding(radius=1.0, classes=["traffic_cone"])  # the agents' classes left out
    assert len(g.candidates(det)) == int((det["labels_3d"] == NUSCENES_CLASSES.index("traffic_cone")).sum())
    assert g.ground(tag, g.candidates(det), s) == f"{tag} (not detected)"
    far = "<c1,CAM_FRONT,-500.0,-500.0>"  # no projection lands within the radius of it
    assert QuestionGrounding(radius=40.0).ground(far, QuestionGrounding().candidates(det), s) == f"{far} (not detected)"


def test_apply_keeps_family_index_and_answer_and_is_idempotent(tiny_world):
    _, data = _samples(tiny_world, _cfg(), n=2)
    g = QuestionGrounding(radius=40.0, score_thr=0.0, families=["collision_actions"])
    for s in data["data_samples"]:
        s.perception_dets = _gt_dets(s)
        before = list(s.qa)
        g.apply([s])
        once = list(s.qa)
        g.apply([s])
        assert s.qa == once and s.qa_ungrounded == before
        for old, new in zip(before, s.qa):
            assert (new.family, new.index, new.answer, new.stage) == (old.family, old.index, old.answer, old.stage)
            if old.family == "collision_actions":
                assert CTAG_RE.sub("", GROUNDED.sub("", new.question)) == CTAG_RE.sub("", old.question)
                assert GROUNDED.search(new.question)
            else:
                assert new.question == old.question
    with pytest.raises(ValueError, match="needs perception_text"):
        g.apply([types.SimpleNamespace(qa=list(before))])


def test_training_and_predict_read_the_grounded_questions(tiny_world):
    """In training and at test time every c-tag of a question the LLM reads carries its grounding; the
    answers keep their indices, and the lossless stack gives the greedy answers."""
    cfg = _cfg()
    cfg.model.question_grounding = dict(radius=40.0, score_thr=0.0)
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.to_dict()).train()
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    losses = model(**data, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    tagged = [q for s in data["data_samples"] for q in s.qa if CTAG_RE.search(q.question)]
    assert tagged and all(len(GROUNDED.findall(q.question)) == len(CTAG_RE.findall(q.question)) for q in tagged)

    model.eval()
    val = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                              data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    pdata = model.data_preprocessor(pseudo_collate([val[0]]), False)
    model.set_test_cfg(dict(stream_temporal=False))
    with torch.no_grad():
        out = model(**copy.deepcopy(pdata), mode="predict")[0]
    assert set(out.pred_answers) == {qa.index for qa in pdata["data_samples"][0].qa}
    assert any(GROUNDED.search(q.question) for q in out.qa)
    model.set_test_cfg(dict(share_prompt_cache=True, speculative=dict(
        skip_layers=[], use_layer_skip=False, draft_len=4, ngram_min_n=2, use_ngram=True, batched=True)))
    model.reset_test_state()
    with torch.no_grad():
        fast = model(**copy.deepcopy(pdata), mode="predict")[0].pred_answers
    assert fast == out.pred_answers


def test_grounding_without_the_detections_line_is_refused():
    m = _cfg().model.to_dict()
    with pytest.raises(ValueError, match="question_grounding reads the detections"):
        MODELS.build(dict(m, det_head=None, perception_text=None, question_grounding=dict()))
    with pytest.raises(ValueError, match="radius must be > 0"):
        MODELS.build(dict(m, question_grounding=dict(radius=0)))
    with pytest.raises(ValueError, match="not detection classes"):
        MODELS.build(dict(m, question_grounding=dict(classes=["unicorn"])))
