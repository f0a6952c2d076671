"""Kinematic planning references: closed-form trajectories, and the paired comparison."""
import math

import numpy as np
import pytest

from bevlm.evaluation.planning_baselines import compare_planning, kinematic_plan, summarize_records


def test_constant_velocity_is_a_straight_line():
    np.testing.assert_allclose(kinematic_plan([2.0, 0.5, 3.0, 0.0, 0.4], mode="constant_velocity"),
                               [[1.0 * k, 0.25 * k] for k in range(1, 7)])


def test_ctra_matches_closed_forms():
    t = 0.5 * np.arange(1, 7)
    # constant acceleration along x: x = v t + a t^2 / 2 (midpoint rule: exact)
    np.testing.assert_allclose(kinematic_plan([2.0, 0.0, 1.0, 0.0, 0.0]), np.stack([2 * t + t ** 2 / 2, 0 * t], 1),
                               atol=1e-9)
    # braking to a stop at t = 1 s after 0.5 m, then standing
    np.testing.assert_allclose(kinematic_plan([1.0, 0.0, -1.0, 0.0, 0.0])[:, 0], [0.375, 0.5, 0.5, 0.5, 0.5, 0.5],
                               atol=1e-9)
    # constant turn rate: a circle of radius v / w, to the left for w > 0 (y left)
    v, w = 2.0, 0.5
    arc = np.stack([v / w * np.sin(w * t), v / w * (1 - np.cos(w * t))], 1)
    np.testing.assert_allclose(kinematic_plan([v, 0.0, 0.0, 0.0, w]), arc, atol=2e-3)
    # the motion direction comes from (vx, vy), the acceleration is taken along it
    p = kinematic_plan([0.0, 2.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(p[:, 0], 0, atol=1e-9)
    np.testing.assert_allclose(p[:, 1], 2 * t + t ** 2 / 2, atol=1e-9)
    with pytest.raises(ValueError, match="mode"):
        kinematic_plan([1, 0, 0, 0, 0], mode="magic")


def _records(l2_per_scene: dict) -> list[dict]:
    out = []
    for scene, values in l2_per_scene.items():
        for k, v in enumerate(values):
            out.append({"token": f"{scene}_{k}", "scene_token": scene, "l2": np.full(6, v),
                        "collision": np.zeros(6), "mask": np.ones(6, bool)})
    return out


def test_compare_planning_pairs_frames_and_resamples_scenes():
    ref = _records({"a": [1.0, 1.0], "b": [2.0, 2.0], "c": [3.0, 3.0]})
    assert summarize_records(ref)["L2_avg_stp3"] == pytest.approx(2.0)
    # the run is better by exactly 0.5 m on every frame: the difference is -0.5 on every resample
    run = {r["token"]: {"l2": list(r["l2"] - 0.5), "collision": list(r["collision"]), "gt_traj_mask": list(r["mask"]),
                        "scene_token": r["scene_token"]} for r in ref}
    res = compare_planning(ref, run, resamples=200)
    m = res["metrics"]["L2_avg_stp3"]
    assert (res["frames"], res["scenes"]) == (6, 3)
    assert m["diff"] == pytest.approx(-0.5) and m["lo"] == pytest.approx(-0.5) and m["hi"] == pytest.approx(-0.5)
    assert m["significant"] and math.isclose(m["reference"], 2.0)
    # better on one scene, worse on another: the interval spans 0
    run2 = dict(run)
    for k in ("a_0", "a_1"):
        run2[k] = dict(run[k], l2=[1.0 - 1.0] * 6)
    for k in ("c_0", "c_1"):
        run2[k] = dict(run[k], l2=[3.0 + 1.0] * 6)
    m2 = compare_planning(ref, run2, resamples=500)["metrics"]["L2_avg_stp3"]
    assert m2["lo"] < 0 < m2["hi"] and not m2["significant"]
    with pytest.raises(ValueError, match="same test split"):
        compare_planning(ref, {k: v for k, v in run.items() if k != "b_1"})
