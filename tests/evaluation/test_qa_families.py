"""Question families: every question of the real sample is classified (docs/drivelm_spec.md section 2)."""
from collections import Counter

import pytest

from bevlm.structures.qa_families import CTAG_RE, FAMILIES, classify_question, normalise_question

STAGES = ("perception", "prediction", "planning", "behavior")


def test_every_sample_question_has_a_family(sample):
    counts = Counter()
    for scene in sample.values():
        for frame in scene["key_frames"].values():
            for stage in STAGES:
                for qa in frame["QA"][stage]:
                    family = classify_question(qa["Q"], stage)
                    assert family != "other", (stage, qa["Q"])
                    assert family in FAMILIES[stage]
                    counts[family] += 1
    assert sum(counts.values()) == 790
    # counts of the template tables of docs/drivelm_spec.md section 2
    expected = {"are_there": 93, "status_in_direction": 65, "objects_in_direction": 48,
                "visual_description": 35, "observed_status": 26, "moving_status": 24, "describe_scene": 9,
                "important_objects": 9, "relative_positions": 8, "lanes": 2, "most_relevant": 36,
                "traffic_sign_or_barrier": 35, "in_moving_direction": 35, "future_state": 26, "occlusion": 24,
                "except_ego_most_relevant": 19, "are_traffic_signs": 18, "in_object_moving_direction": 17,
                "notice_order": 9, "should_consider": 26, "actions_based_on": 26, "collision_actions": 26,
                "collision_probability": 26, "safe_actions": 9, "dangerous_actions": 9, "priority": 9,
                "traffic_signal": 9, "target_action": 9, "behavior": 9}
    assert {k: counts[k] for k in expected} == expected


def test_mc_version_and_unknown_questions():
    q = "What is the moving status of object <c1,CAM_BACK,1088.3,497.5>?"
    mc = q + " Please select the correct answer from the following options: A. Going ahead. B. Stopped. " \
             "C. Back up. D. Turn left."
    assert classify_question(mc, "perception") == classify_question(q, "perception") == "moving_status"
    assert normalise_question(mc) == "What is the moving status of object <OBJ>?"
    assert classify_question("How tall is the moon?", "planning") == "other"
    # the same template text under another stage does not match that stage's templates
    assert classify_question(q, "planning") == "other"
    with pytest.raises(ValueError, match="unknown stage 'percept'"):
        classify_question(q, "percept")


def test_ctag_regex():
    text = "<c1,CAM_BACK,1088.3,497.5> and <c2,CAM_FRONT_LEFT,-3,12> but not <c3,LIDAR,1.0,2.0>"
    assert CTAG_RE.findall(text) == [("1", "CAM_BACK", "1088.3", "497.5"), ("2", "CAM_FRONT_LEFT", "-3", "12")]
