"""What a planned trajectory implies for the mini world's planning answers (bevlm.evaluation.plan_answers)."""
import json
import math

import numpy as np
import pytest

from bevlm.datasets.drivelm_io import load_drivelm
from bevlm.evaluation import build_test_eval
from bevlm.evaluation.plan_answers import facts_from_waypoints, options_of, plan_answer_agreement
from bevlm.world.drivelm_qa import FrameFacts, behavior_answer, ego_action, safe_actions_answer


def _straight(speeds, step=0.5):
    """Waypoints along x for per-step speeds (each step covers speed * step metres)."""
    return [[float(x), 0.0] for x in np.cumsum(np.asarray(speeds, float) * step)]


def test_straight_constant_speed_plan_hand_computed():
    f = facts_from_waypoints(6.0, _straight([6.0] * 6))  # 3 m per 0.5-s step
    np.testing.assert_allclose(f.ego_future_speeds, [6.0] * 6)
    np.testing.assert_allclose(f.ego_future_yaw, [0.0] * 6)
    # mean speed 6 m/s (4 <= v < 8: normal), heading 0 deg, speed at 3 s = now: keep
    assert behavior_answer(f) == "The ego vehicle is going straight. The ego vehicle is driving with normal speed."
    assert ego_action(f) == "keep"
    assert safe_actions_answer(f) == "Keep going at the same speed, decelerate gradually without braking."


def test_braking_plan_extrapolates_the_last_speed_to_the_3_s_point():
    # steps at 5, 4, 3, 2, 1, 0.4 m/s (segment means): the last speed read at 3 s is
    # 0.4 + (0.4 - 1) / 2 = 0.1 m/s, below the 0.5 m/s of "moving": the plan stops
    f = facts_from_waypoints(5.5, _straight([5, 4, 3, 2, 1, 0.4]))
    np.testing.assert_allclose(f.ego_future_speeds, [5, 4, 3, 2, 1, 0.1])
    assert ego_action(f) == "stop"
    assert safe_actions_answer(f) == "Brake gently to a stop, decelerate gradually without braking."
    # mean speed (5 + 4 + 3 + 2 + 1 + 0.1) / 6 = 2.52 m/s: slowly
    assert behavior_answer(f).endswith("The ego vehicle is driving slowly.")


def test_left_curve_steers_left_and_adds_the_turn_to_the_safe_actions():
    # constant speed 5 m/s on a circle, heading +6 deg per 0.5 s: the heading at 3 s is 36 deg left;
    # segment headings are the chord directions 3, 9, ..., 33 deg, the last extrapolated to 36
    pts, heading, pos = [], 0.0, np.zeros(2)
    for _ in range(6):
        chord = heading + math.radians(3.0)
        pos = pos + 2.5 * np.array([math.cos(chord), math.sin(chord)])
        pts.append(pos.tolist())
        heading += math.radians(6.0)
    f = facts_from_waypoints(5.0, pts)
    assert math.degrees(f.ego_future_yaw[-1]) == pytest.approx(36.0)
    assert behavior_answer(f) == "The ego vehicle is steering to the left. The ego vehicle is driving with normal speed."
    assert safe_actions_answer(f) == "Keep going at the same speed, decelerate gradually without braking, and turn left."
    with pytest.raises(ValueError, match="at least 2 waypoints"):
        facts_from_waypoints(5.0, [[1.0, 0.0]])


def test_options_of_a_test_format_question():
    q = ("Predict the behavior of the ego vehicle. Please select the correct answer from the following options: "
         "A. The ego vehicle is going straight. The ego vehicle is driving slowly. "
         "B. The ego vehicle is steering to the left. The ego vehicle is driving fast.")
    assert options_of(q) == {"A": "The ego vehicle is going straight. The ego vehicle is driving slowly.",
                             "B": "The ego vehicle is steering to the left. The ego vehicle is driving fast."}


@pytest.fixture(scope="module")
def world_files(tiny_world):
    drivelm = load_drivelm(f"{tiny_world}/drivelm_train.json")
    with open(f"{tiny_world}/world_gt.json") as fh:
        gt = json.load(fh)
    return drivelm, build_test_eval(drivelm, seed=0), gt


def test_the_world_s_answers_are_the_rules_on_its_true_future(world_files):
    """The rule functions the analysis reads write exactly the generated answers (the world's own
    speeds and headings, no waypoints)."""
    drivelm, _, gt = world_files
    checked = 0
    for scene in drivelm.values():
        for token, frame in scene["key_frames"].items():
            g = gt[token]
            f = FrameFacts(g["ego_speed"], np.array(g["ego_future_traj"]), np.array(g["ego_future_speeds"]),
                           np.array(g["ego_future_yaw"]), None, [])
            answers = {qa["Q"]: qa["A"] for stage in frame["QA"].values() for qa in stage}
            assert answers["Predict the behavior of the ego vehicle."] == behavior_answer(f)
            safe = answers.get("In this scenario, what are safe actions to take for the ego vehicle?")
            if safe is not None:
                assert safe == safe_actions_answer(f)
            checked += 1
    assert checked > 0


def test_agreement_of_the_recorded_future_and_of_a_wrong_plan(world_files):
    _, test, gt = world_files
    tokens = [t for scene in test.values() for t in scene["key_frames"]]
    recorded = plan_answer_agreement({t: gt[t]["ego_future_traj"] for t in tokens}, gt, test)
    n = len(tokens)
    assert recorded["totals"]["behavior"]["questions"] == n and recorded["totals"]["behavior"]["answers"] is None
    for row in recorded["totals"].values():  # reading the waypoints loses little against the world's own values
        assert row["questions"] > 0 and row["plan"] >= 0.8 * row["questions"]
    assert sum(r["behavior"][0] for r in recorded["frames"].values()) == recorded["totals"]["behavior"]["plan"]
    # a plan that stands still can only be right where the ego does not move
    still = plan_answer_agreement({t: [[0.0, 0.0]] * 6 for t in tokens}, gt, test)
    moving = [t for t in tokens if np.mean(gt[t]["ego_future_speeds"]) >= 0.5]
    assert still["totals"]["behavior"]["plan"] <= n - len(moving)
    # only the frames given are scored; a frame unknown to world_gt is an error naming it
    one = plan_answer_agreement({tokens[0]: gt[tokens[0]]["ego_future_traj"]}, gt, test)
    assert one["totals"]["behavior"]["questions"] == 1 and list(one["frames"]) == [tokens[0]]
    with pytest.raises(KeyError, match=tokens[0]):
        plan_answer_agreement({tokens[0]: gt[tokens[0]]["ego_future_traj"]}, {}, test)


def test_answers_scored_on_the_same_questions_and_the_interval(world_files):
    from bevlm.evaluation.drivelm_testset import iter_official_ids
    from bevlm.evaluation.plan_answers import plan_minus_answers
    from bevlm.structures.qa_families import question_family

    _, test, gt = world_files
    tokens = [t for scene in test.values() for t in scene["key_frames"]]
    plans = {t: gt[t]["ego_future_traj"] for t in tokens}
    # answers that are the references everywhere but on every behaviour question (a wrong letter)
    answers = {qid: ("Z" if question_family(qa["Q"]) == "behavior" else qa["A"])
               for qid, qa in iter_official_ids(test)}
    got = plan_answer_agreement(plans, gt, test, answers)
    t = got["totals"]
    assert t["behavior"]["answers"] == 0 and t["safe_actions"]["answers"] == t["safe_actions"]["questions"]
    n_safe = sum(1 for _, qa in iter_official_ids(test) if question_family(qa["Q"]) == "safe_actions")
    assert t["safe_actions"]["questions"] == n_safe
    res = plan_minus_answers(got["frames"], resamples=200)
    # hand-computed: plan right (behaviour + safe) minus answers right (safe only), over all their questions
    q = t["behavior"]["questions"] + t["safe_actions"]["questions"]
    assert res["questions"] == q
    assert res["diff"] == pytest.approx((t["behavior"]["plan"] + t["safe_actions"]["plan"] - n_safe) / q)
    assert res["lo"] <= res["diff"] <= res["hi"]
    # identical answers and plans: a zero difference with a zero-width interval
    same = {tok: {"scene": r["scene"], **{f: [v[0], v[0]] for f, v in r.items() if f != "scene"}}
            for tok, r in got["frames"].items()}
    zero = plan_minus_answers(same, resamples=50)
    assert zero["diff"] == 0 and zero["lo"] == 0 and zero["hi"] == 0
    # two draws pooled: the mean of their differences, on the same resamples
    pooled = plan_minus_answers([got["frames"], same], resamples=200)
    assert pooled["diff"] == pytest.approx(res["diff"] / 2)
    assert pooled["lo"] == pytest.approx(res["lo"] / 2) and pooled["hi"] == pytest.approx(res["hi"] / 2)
    with pytest.raises(ValueError, match="same frames"):
        plan_minus_answers([got["frames"], {k: v for k, v in list(same.items())[1:]}])
    with pytest.raises(ValueError, match="scored with answers"):
        plan_minus_answers(plan_answer_agreement(plans, gt, test)["frames"])
