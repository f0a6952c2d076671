"""The official DriveLM score terms on hand-computed cases and on the real sample."""
import math

import pytest

from bevlm.evaluation import (DriveLMEvalError, build_test_eval, evaluate, iter_official_ids, language_score,
                              language_scores, match_result)


def _f1(tp, fp, fn):
    """F1 exactly as evaluation.py writes it (with the 1e-8 terms)."""
    p = tp / (tp + fp + 1e-8)
    r = tp / (tp + fn + 1e-8)
    return 2 * p * r / (p + r + 1e-8)


GT3 = "IDs: <c1,CAM_BACK,1088.3,497.5>, <c2,CAM_BACK,864.2,468.3>, and <c3,CAM_FRONT,1043.2,82.2>."


def test_match_oracle_is_99_9999992():
    res = match_result(GT3, GT3)
    assert (res.true_positives, res.false_positives, res.false_negatives) == (3, 0, 0)
    assert round(res.f1 * 100, 7) == 99.9999992
    assert res.f1 < 1.0
    assert res.matched_gt == ((1088.3, 497.5), (864.2, 468.3), (1043.2, 82.2))


def test_match_threshold_is_strict_16():
    gt = "<c1,CAM_FRONT,100.0,200.0>"
    assert match_result("<c1,CAM_FRONT,115.9,200.0>", gt).true_positives == 1
    at_16 = match_result("<c1,CAM_FRONT,116.0,200.0>", gt)
    assert (at_16.true_positives, at_16.false_positives, at_16.false_negatives) == (0, 1, 1)
    assert at_16.f1 == 0.0
    # L1, not L2: 10 + 6 = 16 is out although the Euclidean distance is 11.7
    assert match_result("<c1,CAM_FRONT,110.0,206.0>", gt).true_positives == 0


def test_match_odd_count_drops_last_prediction_number():
    res = match_result("<c1,CAM_FRONT,100.0,200.0> at 7.5 m", "<c1,CAM_FRONT,100.0,200.0>")
    assert (res.true_positives, res.false_positives) == (1, 0)
    with pytest.raises(DriveLMEvalError, match="reshape"):
        match_result("x", "<c1,CAM_FRONT,100.0,200.0> at 7.5 m")


def test_match_greedy_in_prediction_order():
    gt = "<c1,CAM_FRONT,100.0,100.0> <c2,CAM_FRONT,125.0,100.0>"
    # 112 is 12 from c1 and 13 from c2: it takes c1, then 98 is 27 from c2 -> FP
    greedy = match_result("<c9,CAM_FRONT,112.0,100.0> <c9,CAM_FRONT,98.0,100.0>", gt)
    assert (greedy.true_positives, greedy.false_positives, greedy.false_negatives) == (1, 1, 1)
    assert greedy.f1 == _f1(1, 1, 1)
    swapped = match_result("<c9,CAM_FRONT,98.0,100.0> <c9,CAM_FRONT,112.0,100.0>", gt)
    assert swapped.true_positives == 2 and swapped.matched_gt == ((100.0, 100.0), (125.0, 100.0))
    # ties go to the first GT point
    assert match_result("<c9,CAM_FRONT,105.0,100.0>", "<c1,CAM_FRONT,100.0,100.0> <c2,CAM_FRONT,110.0,100.0>"
                        ).matched_gt == ((100.0, 100.0),)


def test_match_integer_coordinates_are_not_parsed():
    res = match_result("<c1,CAM_FRONT,100,200>", "<c1,CAM_FRONT,100.0,200.0>")
    assert (res.true_positives, res.false_positives, res.false_negatives, res.f1) == (0, 0, 1, 0.0)


def _qa(q, a, tag):
    return {"Q": q, "A": a, "C": None, "tag": tag}


def _gating_test_eval():
    c1, c2 = "<c1,CAM_FRONT,100.0,200.0>", "<c2,CAM_BACK,300.0,400.0>"
    frame = {"QA": {
        "perception": [_qa("Notice order?", f"First {c1}, then {c2}.", [3]),
                       _qa(f"What is the moving status of object {c1}? Please select ...", "A", [0])],
        "prediction": [_qa(f"Is {c2} a traffic sign or a road barrier?", "No.", [0]),
                       _qa("Is <c3,CAM_FRONT,500,600> a traffic sign or a road barrier?", "Yes.", [0])],
        "planning": [_qa(f"What actions could the ego vehicle take based on {c2}?", "Stop.", [1])],
        "behavior": [_qa("Predict the behavior of the ego vehicle.", "B", [0])]}, "image_paths": {}}
    return {"s": {"key_frames": {"f": frame}}}


def test_gating_skips_unmatched_objects_and_counts_them():
    test = _gating_test_eval()
    pred = {"s_f_0": "First <c1,CAM_FRONT,101.0,203.0>.",  # finds c1 only (L1 = 4)
            "s_f_1": "A.",      # raw equality: 'A.' != 'A'
            "s_f_2": "No.",     # correct but about c2, which the graph lacks -> skipped
            "s_f_3": "Yes.",    # integer c-tag: no parsed number -> kept
            "s_f_4": "Stop.",   # about c2 -> skipped
            "s_f_5": "B"}
    out = evaluate(pred, test)
    assert out["counts"] == {"tag0": {"kept": 3, "skipped": 1}, "tag1": {"kept": 0, "skipped": 1},
                             "tag2": {"kept": 0, "skipped": 0}, "tag3": {"kept": 1, "skipped": 0}}
    assert out["accuracy"] == pytest.approx(2 / 3, abs=1e-15)
    # the gated-out 'No.' is right: over all four tag-0 questions, 3 of 4
    assert out["accuracy_ungated"] == pytest.approx(3 / 4, abs=1e-15)
    assert out["match_f1"] == _f1(1, 0, 1) * 100
    # zero kept tag-2 items: None + count, not ZeroDivisionError; so no GPT-free total either
    assert out["language"] is None and out["gpt_free_final"] is None
    assert "language" in out["absent"] and "chatgpt" in out["absent"]
    assert out["final"] is None and out["missing_gpt_weight"] == 0.5
    assert [item["kept"] for item in out["items"]] == [True, True, False, True, False, True]


def test_gating_uses_gt_points_and_exact_equality():
    test = _gating_test_eval()
    # c2 found within 15.9 px: its GT point (300.0, 400.0) enters the graph, so c2 questions count
    pred = {qid: qa["A"] for qid, qa in iter_official_ids(test)}
    pred["s_f_0"] = "<c2,CAM_BACK,315.0,400.9>"
    out = evaluate(pred, test)
    assert out["counts"]["tag0"] == {"kept": 3, "skipped": 1}  # now c1's question is the skipped one
    assert out["counts"]["tag1"] == {"kept": 1, "skipped": 0}
    assert out["accuracy"] == 1.0


def test_missing_prediction_ids_are_listed():
    test = _gating_test_eval()
    pred = {qid: qa["A"] for qid, qa in iter_official_ids(test)}
    del pred["s_f_2"], pred["s_f_5"]
    with pytest.raises(DriveLMEvalError) as e:
        evaluate(pred, test)
    assert "2 test question id(s)" in str(e.value) and "s_f_2" in str(e.value) and "s_f_5" in str(e.value)


def test_language_identical_and_hand_checked():
    same = language_scores(["A red car is parked.", "The light is green."],
                           ["A red car is parked.", "The light is green."])
    for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"):
        assert same[k] == pytest.approx(1.0, abs=1e-6)
    assert same["ROUGE_L"] == 1.0 and same["CIDEr"] == pytest.approx(10.0, abs=1e-9)
    assert language_score(same) == pytest.approx(1.0, abs=1e-6)
    # PTB lower-cases and drops '.': hypothesis 3 tokens, reference 5 tokens, all 3 match
    part = language_scores(["A RED car."], ["a red car is parked."])
    assert part["Bleu_1"] == pytest.approx(math.exp(1 - 5 / 3), abs=1e-6)       # brevity penalty
    beta2 = 1.2 ** 2
    assert part["ROUGE_L"] == pytest.approx((1 + beta2) * 1.0 * 0.6 / (0.6 + beta2 * 1.0), abs=1e-12)
    assert part["CIDEr"] == 0.0  # one reference: every idf is log(1) - log(1) = 0


def test_oracle_on_real_sample(sample):
    test = build_test_eval(sample, seed=0)
    pred = {qid: qa["A"] for qid, qa in iter_official_ids(test)}
    out = evaluate(pred, test, gpt_judge=lambda answer, gt: 50.0)
    assert out["accuracy"] == 1.0
    assert out["language"]["CIDEr"] == pytest.approx(10.0, abs=1e-9)
    assert out["language"]["ROUGE_L"] == 1.0
    assert out["language_score"] == pytest.approx(1.0, abs=1e-9)
    assert out["match_f1"] == pytest.approx(99.9999992, abs=1e-7)
    assert out["gpt_free_final"] == pytest.approx(0.5, abs=1e-6)
    assert {k: v["skipped"] for k, v in out["counts"].items()} == {"tag0": 0, "tag1": 0, "tag2": 0, "tag3": 0}
    # with a judge: official weights 0.4 chatgpt + 0.2 L + 0.2 match + 0.2 accuracy
    assert out["chatgpt"] == 50.0 and out["match"] == pytest.approx((out["match_f1"] + 50.0) / 2)
    expected = 0.4 * 0.5 + 0.2 * out["language_score"] + 0.2 * out["match"] / 100 + 0.2
    assert out["final"] == pytest.approx(expected, abs=1e-12)
    assert out["missing_gpt_weight"] == 0.0 and out["absent"] == []
