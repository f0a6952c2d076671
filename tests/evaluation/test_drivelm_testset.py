"""Test-set construction (extract_data.py + convert_data.py ports), ids and file writers."""
import copy
import os
import random
from collections import Counter

import pytest

from bevlm.evaluation import (BEHAVIOR_OPTIONS, MOVING_STATUS_OPTIONS, DriveLMEvalError, build_test_eval,
                              build_test_frame, iter_official_ids, load_predictions, load_test_eval,
                              mc_question_for, mc_questions_for_frame, select_frame_qa, write_predictions,
                              write_test_eval)
from bevlm.evaluation.drivelm_testset import convert_frame_mc


def test_selection_counts_on_real_sample(sample):
    test = build_test_eval(sample, seed=0)
    items = list(iter_official_ids(test))
    assert len(items) == 66
    assert Counter(tuple(qa["tag"]) for _, qa in items) == {(0,): 26, (1,): 27, (2,): 9, (3,): 4}
    per_stage = Counter()
    for scene in test.values():
        for frame in scene["key_frames"].values():
            assert list(frame) == ["QA", "image_paths"]
            for stage, qas in frame["QA"].items():
                per_stage[stage] += sum(0 in qa["tag"] for qa in qas)
    assert per_stage == {"perception": 8, "prediction": 9, "planning": 0, "behavior": 9}
    # the first QA of every frame is the tag-2 "important objects" question
    assert all(qa["tag"] == [2] for qid, qa in items if qid.rsplit("_", 1)[1] == "0")


def test_official_ids_index_the_concatenated_stages(sample):
    test = build_test_eval(sample, seed=0)
    scene, sdata = next(iter(test.items()))
    frame, fdata = next(iter(sdata["key_frames"].items()))
    qa = fdata["QA"]
    flat = qa["perception"] + qa["prediction"] + qa["planning"] + qa["behavior"]
    ids = [(qid, q) for qid, q in iter_official_ids(test)][:len(flat)]
    assert [qid for qid, _ in ids] == [f"{scene}_{frame}_{i}" for i in range(len(flat))]
    assert [q for _, q in ids] == flat


def test_source_index_points_back_to_full_frame(sample):
    scene, sdata = next(iter(sample.items()))
    frame_token, frame = next(iter(sdata["key_frames"].items()))
    test_frame, source = select_frame_qa(frame)
    full = [qa for st in ("perception", "prediction", "planning", "behavior") for qa in frame["QA"][st]]
    flat = [qa for st in ("perception", "prediction", "planning", "behavior") for qa in test_frame["QA"][st]]
    assert [full[i]["Q"] for i in source] == [qa["Q"] for qa in flat]
    assert "tag" not in full[0]  # the input is not modified


def _rule_based1_official(question, answer):
    """Verbatim logic of convert_data.py::rule_based1 (global ``random``)."""
    rule = ["Going ahead.", "Turn right.", "Turn left.", "Stopped.", "Back up.", "Reverse parking.",
            "Drive backward."]
    rule.remove(answer)
    choices = random.sample(rule, 3)
    choices.append(answer)
    random.shuffle(choices)
    idx = choices.index(answer)
    question += (f" Please select the correct answer from the following options: A. {choices[0]} "
                 f"B. {choices[1]} C. {choices[2]} D. {choices[3]}")
    return {"Q": question, "A": {0: "A", 1: "B", 2: "C", 3: "D"}[idx]}


def test_mc_draw_equals_official_code_under_same_seed():
    tf = {"QA": {"perception": [{"Q": "What is the moving status of object <c1,CAM_BACK,1.0,2.0>?",
                                 "A": "Turn left.", "tag": [0]}],
                 "prediction": [], "planning": [], "behavior": []}}
    ours = convert_frame_mc(copy.deepcopy(tf), random.Random(1234))["QA"]["perception"][0]
    random.seed(1234)
    official = _rule_based1_official(tf["QA"]["perception"][0]["Q"], "Turn left.")
    assert (ours["Q"], ours["A"]) == (official["Q"], official["A"])


def test_mc_seeded_reproducible_and_consistent(sample):
    a, b, c = (build_test_eval(sample, seed=s) for s in (0, 0, 1))
    assert a == b
    qa_a = [qa for _, qa in iter_official_ids(a)]
    qa_c = [qa for _, qa in iter_official_ids(c)]
    assert any(x["Q"] != y["Q"] for x, y in zip(qa_a, qa_c))
    n_mc = 0
    for _, qa in iter_official_ids(a):
        mc = mc_question_for(qa)
        if mc is None:
            continue
        n_mc += 1
        universe = BEHAVIOR_OPTIONS if qa["Q"].startswith("Predict the behavior") else MOVING_STATUS_OPTIONS
        assert len(set(mc.options.values())) == 4 and set(mc.options.values()) <= set(universe)
        assert mc.answer in "ABCD"
    assert n_mc == 8 + 9
    # the options' correct letter names the original GT answer
    scene, sdata = next(iter(sample.items()))
    token, frame = next(iter(sdata["key_frames"].items()))
    mcs = mc_questions_for_frame(frame, scene, token, seed=0)
    full = [qa for st in ("perception", "prediction", "planning", "behavior") for qa in frame["QA"][st]]
    assert mcs and all(m.options[m.answer] == full[i]["A"] for i, m in mcs.items())


def test_frame_draw_does_not_depend_on_frame_order(sample):
    reordered = {s: {"key_frames": dict(reversed(list(v["key_frames"].items())))}
                 for s, v in reversed(list(sample.items()))}
    a = build_test_eval(sample, seed=3)
    b = build_test_eval(reordered, seed=3)
    assert {s: dict(v["key_frames"]) for s, v in a.items()} == {s: dict(v["key_frames"]) for s, v in b.items()}


def _frame(prediction, perception_extra=()):
    tag = "<c1,CAM_FRONT,100.0,200.0>"
    return {
        "key_object_infos": {tag: {"Category": "Vehicle", "Status": "Moving", "Visual_description": "Red car.",
                                   "2d_bbox": [0, 0, 1, 1]}},
        "QA": {"perception": [{"Q": "What are the important objects?", "A": f"There is a red car {tag}."},
                              *perception_extra],
               "prediction": prediction, "planning": [], "behavior": []},
        "image_paths": {}}


def test_yes_no_rule_is_a_substring_test_and_can_list_a_qa_twice():
    tag = "<c1,CAM_FRONT,100.0,200.0>"
    none = {"Q": f"What object would consider {tag} to be most relevant to its decision?", "A": "None."}
    frame = _frame([none, {"Q": "Would it move?", "A": "Yes."}])
    test_frame, _ = select_frame_qa(frame)
    assert test_frame["QA"]["prediction"][-1]["A"] == "None."  # 'no' in 'none'
    # the c-tag rule and the yes/no rule pick the same QA ("notice" contains "no"): listed twice,
    # both with the later tag, as extract_data.py mutates the dict in place
    notice = {"Q": "What object should the ego vehicle notice first?", "A": f"Firstly notice that {tag}."}
    test_frame, source = select_frame_qa(_frame([notice, {"Q": "Would it move?", "A": "Yes."}]))
    assert [qa["tag"] for qa in test_frame["QA"]["prediction"]] == [[0], [0]]
    assert source == [0, 1, 1]
    assert test_frame["QA"]["prediction"][0] is not test_frame["QA"]["prediction"][1]


def test_gt_outside_mc_universe_is_a_clear_error():
    bad = {"Q": "What is the moving status of object <c1,CAM_FRONT,100.0,200.0>?", "A": "Flying."}
    with pytest.raises(DriveLMEvalError, match=r"'Flying\.' is not one of the 7 options.*Fix"):
        build_test_frame(_frame([], [bad]), "s", "f", seed=0)
    with pytest.raises(DriveLMEvalError, match="missing key 'key_object_infos'"):
        select_frame_qa({"QA": {}, "image_paths": {}})


def test_writers_roundtrip(tmp_path, sample):
    test = build_test_eval(sample, seed=0)
    pred = {qid: f"answer {k}" for k, (qid, _) in enumerate(iter_official_ids(test))}
    write_test_eval(test, str(tmp_path / "test_eval.json"))
    write_predictions(pred, test, str(tmp_path / "output.json"))
    assert sorted(os.listdir(tmp_path)) == ["output.json", "test_eval.json"]  # no temp files left
    assert load_test_eval(str(tmp_path / "test_eval.json")) == test
    assert load_predictions(str(tmp_path / "output.json")) == pred
    with pytest.raises(DriveLMEvalError, match="have no prediction"):
        write_predictions({}, test, str(tmp_path / "never.json"))
    assert not (tmp_path / "never.json").exists()
    (tmp_path / "bad.json").write_text('[{"id": "x"}]')
    with pytest.raises(DriveLMEvalError, match=r"bad.json: item \[0\] lacks 'id' or 'answer'"):
        load_predictions(str(tmp_path / "bad.json"))
