"""Closed-set answers (test_cfg.closed_set): the candidates are the family's training answers by
frequency, each question's answer is the argmax of its candidates scored alone (minus the
content-free prior when calibrated), and only the chosen families' answers change."""
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.models.llm import HFCausalLM
from bevlm.models.qa import OptionPrior, QAPolicy
from bevlm.models.qa.closed_set import (check_closed_set, choose_closed_answers, closed_set_answers, coverage,
                                       untagged)
from bevlm.registry import DATASETS, MODELS
from bevlm.structures import QAItem
from bevlm.testing import TINY_LLAMA_CONFIG
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)

COLLISION = "What actions taken by the ego vehicle can lead to a collision with <c1,CAM_BACK,712.3,455.1>?"


def _qa(answer, family="collision_actions", index=0, question=COLLISION):
    return QAItem(question, answer, "planning", index, family)


def test_check_closed_set_fills_defaults_and_names_the_bad_key():
    assert check_closed_set(None) is None
    cs = check_closed_set(dict(families=["collision_actions", "collision_actions"]))
    assert cs == dict(families=["collision_actions"], scoring="likelihood", min_count=2, max_answers=32)
    for bad, match in [(dict(families="collision_actions"), "families"), (dict(families=[]), "families"),
                       (dict(families=["collisions"]), "unknown families"),
                       (dict(families=["collision_actions"], scoring="vote"), "scoring"),
                       (dict(families=["collision_actions"], min_count=0), "min_count"),
                       (dict(families=["collision_actions"], max_answers=True), "max_answers")]:
        with pytest.raises(ValueError, match=match):
            check_closed_set(bad)
    with pytest.raises(KeyError, match="unknown keys"):
        check_closed_set(dict(families=["collision_actions"], top_k=3))
    from bevlm.models.detectors.test_cfg import TestConfig

    cfg = TestConfig.from_dict(dict(closed_set=dict(families=["collision_actions"], scoring="calibrated")))
    assert cfg.closed_set["min_count"] == 2 and cfg.calibrated
    assert not TestConfig().calibrated and TestConfig(multiple_choice="calibrated").calibrated
    with pytest.raises(ValueError, match="scoring"):
        TestConfig.from_dict(dict(closed_set=dict(families=["collision_actions"], scoring="vote")))


def test_candidates_are_the_family_training_answers_by_frequency():
    frames = [[_qa("Back up."), _qa("No."), _qa("Yes.", "should_consider", 1)],
              [_qa("No."), _qa("Back up."), _qa(" No. ")],
              [_qa("Sharp left turn."), _qa("")]]
    got = closed_set_answers(frames, ["collision_actions"])
    assert got == {"collision_actions": ["No.", "Back up."]}  # 3x, 2x; the single text is dropped
    assert closed_set_answers(frames, ["collision_actions"], min_count=1, max_answers=2) == got
    assert closed_set_answers(frames, ["collision_actions"], min_count=1)["collision_actions"][-1] == "Sharp left turn."
    with pytest.raises(ValueError, match="min_count"):
        closed_set_answers(frames, ["collision_actions"], min_count=4)
    with pytest.raises(ValueError, match="safe_actions"):
        closed_set_answers(frames, ["safe_actions"])
    assert coverage([_qa("No."), _qa("Sharp left turn."), _qa("x", "other")], got) == {"collision_actions": 0.5}


def _llm() -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(tiny_config=dict(TINY_LLAMA_CONFIG)).eval()


@pytest.mark.parametrize("mode", ["full", "three_rounds"])
def test_each_answer_is_the_argmax_of_its_candidates_scored_alone(mode):
    llm, policy = _llm(), QAPolicy(mode=mode)
    torch.manual_seed(2)
    frame, blank = torch.randn(1, 5, llm.hidden_size), torch.randn(1, 5, llm.hidden_size)
    cache = llm.prefill(frame)
    cands = {"collision_actions": ["No such action will lead to a collision.", "Back up.", "Moderate left turn."],
             "should_consider": ["Yes.", "No."]}
    items = [_qa("", index=3), _qa("", index=5, question=COLLISION.replace("c1,CAM_BACK", "c2,CAM_FRONT")),
             _qa("", "should_consider", 9, "Is <c1,CAM_BACK,712.3,455.1> an object that the ego vehicle should "
                                             "consider in the current scene?")]
    for prior in (None, OptionPrior(llm, blank)):
        chosen, scores = choose_closed_answers(llm, cache, items, cands, policy, prior=prior)
        for qa in items:
            assert list(scores[qa.index]) == cands[qa.family]
            for text in cands[qa.family]:
                one = [QAItem(qa.question, text, qa.stage, qa.index, qa.family)]
                pair = (policy.question_text(one), policy.answer_text(one))
                want = llm.answer_logprobs(cache, [pair])[0]
                if prior is not None:
                    want -= llm.answer_logprobs(llm.prefill(blank), [pair])[0]
                assert math.isclose(scores[qa.index][text], want, abs_tol=2e-4)
            assert chosen[qa.index] == max(scores[qa.index], key=scores[qa.index].get)
    # tag-calibrated: minus the same candidate given the question with its c-tag replaced by "the object"
    chosen, scores = choose_closed_answers(llm, cache, items, cands, policy, tag_calibrated=True)
    for qa in items:
        for text in cands[qa.family]:
            pairs = []
            for question in (qa.question, untagged(qa.question)):
                one = [QAItem(question, text, qa.stage, qa.index, qa.family)]
                pairs.append((policy.question_text(one), policy.answer_text(one)))
            tagged, blank_tag = (llm.answer_logprobs(cache, [p])[0] for p in pairs)
            assert math.isclose(scores[qa.index][text], tagged - blank_tag, abs_tol=2e-4)
        assert chosen[qa.index] == max(scores[qa.index], key=scores[qa.index].get)
    assert untagged(COLLISION) == "What actions taken by the ego vehicle can lead to a collision with the object?"
    with pytest.raises(ValueError, match="not both"):
        choose_closed_answers(llm, cache, items, cands, policy, prior=OptionPrior(llm, blank), tag_calibrated=True)
    # a prior equal to the frame leaves every score at zero: the tie goes to the most frequent text
    same, flat = choose_closed_answers(llm, cache, items, cands, policy, prior=OptionPrior(llm, frame))
    assert all(abs(v) < 2e-4 for s in flat.values() for v in s.values())
    assert same == {3: cands["collision_actions"][0], 5: cands["collision_actions"][0], 9: "Yes."}
    with pytest.raises(KeyError, match="no candidate answers"):
        choose_closed_answers(llm, cache, [_qa("", "safe_actions")], cands, policy)


def _tiny(world):
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.to_dict()).eval()
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame",
                             qa_select="test", test_mode=True))
    return cfg, model, ds


@pytest.mark.parametrize("scoring", ["likelihood", "tag_calibrated"])
def test_closed_set_changes_only_the_family_answers(tiny_world, scoring):
    from bevlm.inference.variants import apply_variant

    cfg, model, ds = _tiny(tiny_world)
    train_qa = [entry["qa"] for entry in ds.data_list]
    data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    qa = data["data_samples"][0].qa
    family = "collision_actions"
    closed = [q for q in qa if q.family == family]
    assert closed and len(closed) < len(qa)
    generated = model(**data, mode="predict")[0].pred_answers
    spec = dict(closed_set=dict(families=[family], min_count=1, scoring=scoring))
    with pytest.raises(ValueError, match="training QA"):
        apply_variant(model, spec, log=lambda *_: None)
    apply_variant(model, spec, log=lambda *_: None, train_qa=train_qa)
    cands = closed_set_answers(train_qa, [family], min_count=1)
    assert model.closed_answers == cands
    model.temporal_cache.reset()
    out = model(**data, mode="predict")[0]
    assert set(out.pred_answers) == set(generated) and out.efficiency["closed_scored"] == len(closed)
    for index, answer in out.pred_answers.items():
        if index in {q.index for q in closed}:
            assert answer in cands[family]
        else:
            assert answer == generated[index]
    # the answers are the argmax over the candidates, scored on the frame's own prefix
    model.temporal_cache.reset()
    vis, _ = model.visual_tokens(data["inputs"]["imgs"], data["data_samples"])
    cache = model.llm.prefill(model.build_prefix(vis, data["data_samples"]))
    chosen, _ = choose_closed_answers(model.llm, cache, closed, cands, model.qa_policy,
                                      tag_calibrated=scoring == "tag_calibrated")
    assert chosen == {q.index: out.pred_answers[q.index] for q in closed}
    # without candidate sets the model refuses, naming the fix
    model.set_closed_answers(None)
    model.temporal_cache.reset()
    with pytest.raises(RuntimeError, match="set_closed_answers"):
        model(**data, mode="predict")
