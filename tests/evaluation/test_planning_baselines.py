"""Kinematic planning references: closed-form trajectories, and the paired comparison."""
import math

import numpy as np
import pytest

from bevlm.evaluation.planning_baselines import compare_planning, kinematic_plan, planning_reference, summarize_records


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


def _frames(n_scenes: int, per_scene: int, future, seed: int = 0) -> list[dict]:
    """Frames with random ego states and the future ``future(ego)`` ([6, 2]), all steps known."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_scenes):
        for k in range(per_scene):
            ego = np.array([rng.uniform(0, 10), 0.0, rng.uniform(-1, 1), 0.0, rng.uniform(-0.1, 0.1)])
            out.append({"scene_token": f"s{s}", "token": f"s{s}_{k}", "ego_status": ego,
                        "ego_fut_traj": future(ego), "ego_fut_mask": np.ones(6)})
    return out


def test_ego_mlp_learns_what_ctra_misses_from_the_ego_status():
    """Futures that drift left in proportion to the speed (a rule of the ego status that CTRA does not
    know): the fitted planner, scored on other scenes, is far closer than CTRA."""
    from bevlm.evaluation.planning_baselines import _stp3_l2, fit_ego_mlp

    t = 0.5 * np.arange(1, 7)

    def future(ego):
        return kinematic_plan(ego) + np.stack([0 * t, 0.05 * ego[0] * t ** 2], 1)

    planner = fit_ego_mlp(_frames(9, 20, future), max_epochs=600)
    test = _frames(4, 20, future, seed=1)
    ego = np.stack([f["ego_status"] for f in test])
    gt = np.stack([f["ego_fut_traj"] for f in test])
    mask = np.ones((len(test), 6), bool)
    ctra = _stp3_l2(np.stack([kinematic_plan(e) for e in ego]), gt, mask)
    mlp = _stp3_l2(planner(ego), gt, mask)
    assert ctra > 0.5 and mlp < 0.3 * ctra
    assert planner.holdout_l2["scenes"] == 3 and planner.holdout_l2["ego_mlp"] < planner.holdout_l2["ctra"]
    assert planner(ego[0]).shape == (6, 2)


def test_ego_mlp_is_reproducible_and_needs_training_scenes():
    from bevlm.evaluation.planning_baselines import fit_ego_mlp, planning_reference

    frames = _frames(6, 10, kinematic_plan)
    a, b = fit_ego_mlp(frames, max_epochs=100), fit_ego_mlp(frames, max_epochs=100)
    ego = np.stack([f["ego_status"] for f in frames])
    np.testing.assert_array_equal(a(ego), b(ego))
    assert a.epochs == b.epochs
    with pytest.raises(ValueError, match="2 or more scenes"):
        fit_ego_mlp(_frames(1, 10, kinematic_plan))
    with pytest.raises(ValueError, match="planner fitted for it"):
        planning_reference([], "ego_mlp")
    with pytest.raises(ValueError, match="command=True"):
        planning_reference([], "ego_mlp_cmd", a)  # fitted without the command
    with pytest.raises(ValueError, match="not one of"):
        planning_reference([], "oracle")


def test_ego_mlp_cmd_learns_the_turns_the_ego_status_cannot_know():
    """Futures that bend 4 m left, 4 m right or not at all, at random: the ego status cannot tell which,
    the command can. The planner given the command is far closer than the one without it, on other
    scenes, and the commands of the references come from the samples' ego_command."""
    from bevlm.evaluation.planning_baselines import _stp3_l2, fit_ego_mlp
    from bevlm.structures import driving_command

    t = 0.5 * np.arange(1, 7)

    def frames(n_scenes, seed):
        rng = np.random.default_rng(seed)
        out = _frames(n_scenes, 30, kinematic_plan, seed=seed)
        for f in out:
            f["ego_fut_traj"] = f["ego_fut_traj"] + np.stack([0 * t, rng.choice([-4.0, 0.0, 4.0]) * (t / 3) ** 2], 1)
        return out

    train, test = frames(9, 0), frames(4, 1)
    plain = fit_ego_mlp(train, max_epochs=600)
    cmd = fit_ego_mlp(train, max_epochs=600, command=True)
    assert cmd.uses_command and not plain.uses_command
    ego = np.stack([f["ego_status"] for f in test])
    gt = np.stack([f["ego_fut_traj"] for f in test])
    command = np.array([driving_command(f["ego_fut_traj"], f["ego_fut_mask"]) for f in test])
    assert set(command) == {0, 1, 2}
    mask = np.ones((len(test), 6), bool)
    l2_plain, l2_cmd = _stp3_l2(plain(ego), gt, mask), _stp3_l2(cmd(ego, command), gt, mask)
    assert l2_plain > 0.5 and l2_cmd < 0.3 * l2_plain
    assert cmd.holdout_l2["ego_mlp_cmd"] < 0.5 * plain.holdout_l2["ego_mlp"]
    with pytest.raises(ValueError, match="pass command"):
        cmd(ego)


def test_recorded_future_and_rescoring_a_recorded_run():
    """The recorded future scores L2 0 and shows the collision floor; a run recorded with other
    per-frame values is scored again from its trajectories by the current metric."""
    import torch

    from bevlm.datasets.converters.nuscenes_infos import CLASSES
    from bevlm.evaluation.planning_baselines import rescore_run
    from bevlm.structures import DriveDataSample

    straight = np.stack([2.0 * np.arange(1, 7), np.zeros(6)], 1)
    samples = []
    for k, label in enumerate([CLASSES.index("car"), CLASSES.index("traffic_light")]):
        s = DriveDataSample()
        s.set_metainfo({"token": f"t{k}", "scene_token": "s"})
        s.gt_traj, s.gt_traj_mask = torch.tensor(straight, dtype=torch.float32), torch.ones(6, dtype=torch.bool)
        s.ego_status = torch.tensor([4.0, 0, 0, 0, 0])
        boxes = np.full((1, 6, 5), np.nan, np.float32)
        boxes[0, 2] = [6.0, 0.0, 0.4, 0.45, 0.0]   # on the path at 1.5 s
        s.gt_agent_fut_boxes, s.gt_labels = torch.from_numpy(boxes), torch.tensor([label])
        samples.append(s)
    records = planning_reference(samples, "recorded_future")
    assert [r["l2"].max() for r in records] == [0.0, 0.0]
    assert [r["collision"].tolist() for r in records] == [[0, 0, 1, 0, 0, 0], [0] * 6]  # a car hits, a signal not
    # a recorded run: its per-frame values say "collision everywhere"; rescoring reads only pred_traj
    run = {f"t{k}": {"scene_token": "s", "pred_traj": straight.tolist(), "gt_traj": straight.tolist(),
                     "gt_traj_mask": [True] * 6, "l2": [9.0] * 6, "collision": [1.0] * 6} for k in range(2)}
    new = rescore_run(samples, run)
    assert new["t0"]["collision"] == [0, 0, 1, 0, 0, 0] and new["t1"]["collision"] == [0] * 6
    assert new["t0"]["l2"] == [0.0] * 6 and run["t0"]["l2"] == [9.0] * 6   # the record is not modified
    with pytest.raises(ValueError, match="t1 is missing from the run"):
        rescore_run(samples, {"t0": run["t0"]})


def test_summarize_by_command_hand_computed():
    """Frames are grouped by the command of their recorded future; a plan 1 m beside the recorded one at
    every step has L2 1 m, an exact plan 0."""
    from bevlm.evaluation.planning_baselines import summarize_by_command

    t = np.arange(1, 7, dtype=float)
    straight = np.stack([2.0 * t, np.zeros(6)], 1)
    left = np.stack([2.0 * t, 0.2 * t ** 2], 1)       # ends 7.2 m to the left: a turn
    planning = {
        "a": {"pred_traj": straight.tolist(), "gt_traj": straight.tolist(), "gt_traj_mask": [True] * 6,
              "l2": [0.0] * 6, "collision": [0.0] * 6},
        "b": {"pred_traj": (straight + [0, 1]).tolist(), "gt_traj": straight.tolist(), "gt_traj_mask": [True] * 6,
              "l2": [1.0] * 6, "collision": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]},
        "c": {"pred_traj": (left + [1, 0]).tolist(), "gt_traj": left.tolist(), "gt_traj_mask": [True] * 6,
              "l2": [1.0] * 6, "collision": [0.0] * 6},
    }
    out = summarize_by_command(planning)
    assert list(out) == ["turn left", "go straight"]   # the order of COMMANDS; absent commands left out
    assert out["go straight"]["frames"] == 2 and out["turn left"]["frames"] == 1
    assert out["go straight"]["L2_avg_stp3"] == pytest.approx(0.5)   # (0 + 1) / 2 at every horizon
    assert out["turn left"]["L2_avg_stp3"] == pytest.approx(1.0)
    assert out["turn left"]["collision_avg_stp3"] == 0.0 and out["go straight"]["collision_avg_stp3"] > 0.0
    with pytest.raises(ValueError, match="no gt_traj"):
        summarize_by_command({"x": {"l2": [0.0] * 6, "collision": [0.0] * 6}})


def _per_frame(records: list[dict], shift: float = 0.0) -> dict:
    """A per_frame.json ``planning`` section of the records, every L2 moved by ``shift``."""
    return {r["token"]: {"l2": (np.asarray(r["l2"]) + shift).tolist(), "collision": np.asarray(r["collision"]).tolist(),
                         "gt_traj_mask": np.asarray(r["mask"], float).tolist(), "scene_token": r["scene_token"]}
            for r in records}


def test_compare_planning_runs_pairs_seeds_and_pools_them(tmp_path):
    """Two (reference, run) pairs: one run better by 0.5 m on every frame, the other by 0.1 m. Each
    pair's difference is exact on every resample, the mean is -0.3; a run planned on other frames is
    refused; the command line (tools/compare.py --planning) reads test_planning/ folders."""
    import json
    import subprocess
    import sys

    from bevlm.evaluation.planning_baselines import compare_planning_runs
    from tests.conftest import REPO

    base = _records({"a": [1.0, 1.0, 1.5], "b": [2.0, 2.0], "c": [3.0, 2.5]})
    ref = _per_frame(base)
    pairs = [(ref, _per_frame(base, -0.5)), (_per_frame(base, 0.2), _per_frame(base, 0.1))]
    res = compare_planning_runs(pairs, resamples=300)
    assert (res["frames"], res["scenes"]) == (7, 3)
    first, second, mean = res["pairs"][0]["L2_avg_stp3"], res["pairs"][1]["L2_avg_stp3"], res["mean"]["L2_avg_stp3"]
    assert first["diff"] == pytest.approx(-0.5) and first["lo"] == pytest.approx(-0.5) and first["significant"]
    assert second["diff"] == pytest.approx(-0.1) and second["hi"] == pytest.approx(-0.1)
    assert mean["diff"] == pytest.approx(-0.3) and mean["lo"] == pytest.approx(-0.3) and mean["hi"] == pytest.approx(-0.3)
    assert mean["reference"] == pytest.approx(summarize_records(base)["L2_avg_stp3"] + 0.1)
    with pytest.raises(ValueError, match="same split"):
        compare_planning_runs([(ref, {k: v for k, v in ref.items() if k != "c_1"})])
    folders = []
    for k, planning in enumerate([pairs[0][0], pairs[0][1], pairs[1][0], pairs[1][1]]):
        d = tmp_path / f"run{k}" / "test_planning"
        d.mkdir(parents=True)
        (d / "per_frame.json").write_text(json.dumps({"planning": planning}))
        folders.append(str(tmp_path / f"run{k}"))
    out = tmp_path / "cmp.md"
    proc = subprocess.run([sys.executable, "tools/compare.py", "--planning", "--paired", *folders, "--pooled", "fit",
                           "--resamples", "200", "--metrics", "planning/L2_avg_stp3", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fit (mean of 2 pairs)" in proc.stdout and "| -0.3 | [-0.3, -0.3] | * |" in proc.stdout
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["results"]["mean"]["L2_avg_stp3"]["diff"] == pytest.approx(-0.3)
