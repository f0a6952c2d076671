"""Paired bootstrap of the nuScenes detection scores: the re-scoring equals the devkit's DetectionEval."""
import json
import math
import os

import numpy as np
import pytest

from bevlm.evaluation.det_bootstrap import (MATCHES_FILE, DetectionMatches, paired_det_bootstrap,
                                            score_matches)
from tests.evaluation.test_nuscenes_det_metric import RANGE, _classes_in_range, _score
from tests.evaluation.test_nuscenes_det_metric import val_infos  # noqa: F401 (fixture)

_classes = _classes_in_range


def _noisy_samples(infos, seed):
    """Imperfect predictions: GT boxes moved, resized, turned and given a velocity error by random
    amounts (some beyond every matching threshold), some dropped, plus false positives; random scores."""
    rng = np.random.default_rng(seed)
    samples = []
    for frame in infos["data_list"]:
        inst = [i for i in frame["instances"] if i["num_lidar_pts"] > 0 and i["bbox_label_3d"] < 10]
        rows, labels = [], []
        for i in inst:
            if rng.random() < 0.2:
                continue  # missed
            box = np.array(i["bbox_3d"] + list(i["velocity"]), dtype=np.float64)
            box[:2] += rng.normal(0, 1.2, 2)
            box[3:6] *= rng.uniform(0.7, 1.3, 3)
            box[6] += rng.normal(0, 0.5)
            box[7:9] += rng.normal(0, 1.0, 2)
            rows.append(box)
            labels.append(i["bbox_label_3d"])
        for _ in range(rng.integers(1, 4)):  # false positives
            rows.append(np.array([*rng.uniform(-25, 25, 2), 0.8, 4.0, 1.8, 1.5, rng.uniform(-3, 3), 0.0, 0.0]))
            labels.append(int(rng.choice([0, 8])))
        samples.append(dict(token=frame["token"], pred_instances_3d=dict(
            bboxes_3d=np.array(rows).reshape(-1, 9), scores_3d=rng.uniform(0.05, 1.0, len(rows)),
            labels_3d=np.array(labels, dtype=np.int64))))
    return samples


@pytest.fixture(scope="module")
def two_runs(tiny_world, val_infos, tmp_path_factory):
    """Two imperfect detectors scored by the metric (which writes their matches) on all val frames."""
    out = []
    for seed in (1, 2):
        d = str(tmp_path_factory.mktemp(f"det_run{seed}"))
        out.append((d, _score(tiny_world, val_infos, _noisy_samples(val_infos, seed), d)))
    return out


def test_full_set_scores_equal_the_devkit(two_runs):
    for d, metrics in two_runs:
        m = DetectionMatches.load(d)
        assert 0.0 < metrics["mAP"] < 1.0  # a non-trivial precision / recall curve
        rescored = score_matches(m)
        assert set(rescored) == set(metrics)
        for k, v in metrics.items():
            assert rescored[k] == pytest.approx(v, rel=1e-12, abs=1e-12) or (math.isnan(v) and math.isnan(rescored[k])), k


def test_a_frame_subset_equals_the_devkit_on_those_frames(tiny_world, val_infos, two_runs):
    m = DetectionMatches.load(two_runs[0][0])
    samples = _noisy_samples(val_infos, 1)
    keep = {s["token"] for s in samples[::2]}
    sub = _score(tiny_world, val_infos, [s for s in samples if s["token"] in keep])
    weights = np.array([1 if t in keep else 0 for t in m.tokens.tolist()])
    rescored = score_matches(m, weights)
    for k, v in sub.items():
        assert rescored[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_a_frame_drawn_twice_counts_its_boxes_twice(two_runs):
    m = DetectionMatches.load(two_runs[0][0])
    ones = np.ones(len(m.tokens), dtype=int)
    # doubling every frame doubles every count: the precision / recall points interleave, and each AP
    # stays within the resolution of the curve (interpolated at 101 recall steps)
    a, b = score_matches(m, ones), score_matches(m, 2 * ones)
    assert b["mAP"] == pytest.approx(a["mAP"], abs=0.03)
    # a frame with no weight and no others: no ground truth, every AP 0
    assert score_matches(m, 0 * ones)["mAP"] == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        score_matches(m, -ones)


def test_a_run_against_itself_differs_by_exactly_zero(two_runs):
    m = DetectionMatches.load(two_runs[0][0])
    res = paired_det_bootstrap([m], [m], resamples=20)
    for k, r in res.items():
        if math.isnan(r["diff"]):
            continue
        assert r["diff"] == 0.0 and r["low"] == 0.0 and r["high"] == 0.0 and not r["significant"], k


def test_two_runs_compared_and_pooled(two_runs):
    (d1, m1), (d2, m2) = two_runs
    a, b = DetectionMatches.load(d1), DetectionMatches.load(d2)
    res = paired_det_bootstrap([a], [b], resamples=50, seed=3)
    assert res["NDS"]["diff"] == pytest.approx(m2["NDS"] - m1["NDS"])
    assert res["NDS"]["low"] <= res["NDS"]["high"]
    pooled = paired_det_bootstrap([a, b], [b], resamples=10)
    assert pooled["mAP"]["ref"] == pytest.approx((m1["mAP"] + m2["mAP"]) / 2)
    assert pooled["mAP"]["ref_each"] == pytest.approx([m1["mAP"], m2["mAP"]])


def test_file_round_trip_and_errors(two_runs, tmp_path):
    m = DetectionMatches.load(os.path.join(two_runs[0][0], MATCHES_FILE))
    m.save(str(tmp_path / "copy.npz"))
    back = DetectionMatches.load(str(tmp_path / "copy.npz"))
    for field in ("tokens", "scenes", "gt_count", "det_class", "det_frame", "det_conf", "det_match"):
        assert np.array_equal(getattr(back, field), getattr(m, field)), field
    assert np.array_equal(back.errors, m.errors, equal_nan=True)
    assert (back.classes, back.dist_ths, back.dist_th_tp) == (m.classes, m.dist_ths, m.dist_th_tp)
    with pytest.raises(FileNotFoundError, match="no detection matches file.*tools/test.py"):
        DetectionMatches.load(str(tmp_path / "nowhere"))
    # a file holding a pickled object is refused, not unpickled
    np.savez(str(tmp_path / "evil.npz"), tokens=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a detection matches file"):
        DetectionMatches.load(str(tmp_path / "evil.npz"))
    np.savez(str(tmp_path / "partial.npz"), tokens=np.array(["a"]))
    with pytest.raises(ValueError, match="missing arrays"):
        DetectionMatches.load(str(tmp_path / "partial.npz"))
    # runs on different frames are not paired
    fewer = DetectionMatches.load(str(tmp_path / "copy.npz"))
    fewer.tokens = fewer.tokens[:-1]
    with pytest.raises(ValueError, match="same val frames"):
        paired_det_bootstrap([m], [fewer], resamples=2, names=(["a"], ["b"]))


def test_compare_det_tool(tiny_world, val_infos, two_runs, tmp_path, capsys):
    from tools.compare_det import main

    (d1, _), (d2, _) = two_runs
    out = str(tmp_path / "cmp.md")
    assert main(["--ref", d1, "--run", d2, "--resamples", "20", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "| NDS |" in text and "[95 % CI]" in text
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert set(data["results"]) >= {"NDS", "mAP", "mATE"}
    assert main(["--ref", str(tmp_path / "none"), "--run", d2]) == 2
    assert "no detection matches file" in capsys.readouterr().err
    # matches rebuilt from a run's results_nusc.json with a config's evaluator settings equal the metric's
    cfg = tmp_path / "det.py"
    cfg.write_text(f"test_evaluator = dict(type='NuScenesDetMetric', data_root={tiny_world!r}, version='v1.0-mini', "
                   f"class_range={RANGE}, class_names={_classes(val_infos)!r})\n")
    copy = tmp_path / "copy_run"
    copy.mkdir()
    (copy / "results_nusc.json").write_text((open(os.path.join(d1, "results_nusc.json"))).read())
    assert main(["--matches-from", str(cfg), str(copy)]) == 0
    a, b = DetectionMatches.load(d1), DetectionMatches.load(str(copy))
    assert np.array_equal(a.det_match, b.det_match) and np.array_equal(a.det_conf, b.det_conf)


def test_sweep_summary_compares_detectors(two_runs):
    from bevlm.engine.sweep import _bootstrap_vs_reference, summary_markdown

    (d1, m1), (d2, m2) = two_runs
    dirs_of = {("det", 0): {"": d1}, ("det_more", 0): {"": d2}}
    boot = _bootstrap_vs_reference(dict(name="s", resamples=10), dirs_of, ["det", "det_more"],
                                   ["nuscenes/NDS", "nuscenes/mAP"])
    entry = boot["diffs"]["det_more"]["nuscenes/NDS"]
    assert entry["diff"] == pytest.approx(m2["NDS"] - m1["NDS"]) and entry["seeds"] == 1
    assert entry["lo"] <= entry["hi"] and "det_more" not in boot["not_compared"]
    summary = dict(columns=["nuscenes/NDS"], reference="det", bootstrap=boot,
                   runs={r: {"seeds": [0], "metrics": {"nuscenes/NDS": {"mean": m["NDS"], "std": None, "n": 1}}}
                         for r, m in (("det", m1), ("det_more", m2))})
    assert any(line.startswith("| det_more | 1 | ") and "[" in line for line in summary_markdown(summary))


def test_zero_velocity_results_only_stop_the_boxes():
    from bevlm.evaluation.nuscenes_det_metric import zero_velocity_results

    box = dict(sample_token="t", translation=[1.0, 2.0, 0.5], size=[1.9, 4.5, 1.6], rotation=[1.0, 0, 0, 0],
               velocity=[3.0, -4.0], detection_name="car", detection_score=0.7, attribute_name="vehicle.moving")
    ped = dict(box, detection_name="pedestrian", attribute_name="pedestrian.moving")
    results = {"meta": {"use_camera": True}, "results": {"t": [box, ped], "u": []}}
    before = json.dumps(results, sort_keys=True)
    out = zero_velocity_results(results)
    assert json.dumps(results, sort_keys=True) == before  # the input is not modified
    assert out["meta"] == results["meta"] and out["results"]["u"] == []
    car, person = out["results"]["t"]
    assert car["velocity"] == [0.0, 0.0] and person["velocity"] == [0.0, 0.0]
    assert car["attribute_name"] == "vehicle.parked" and person["attribute_name"] == "pedestrian.standing"
    assert {k: v for k, v in car.items() if k not in ("velocity", "attribute_name")} == \
        {k: v for k, v in box.items() if k not in ("velocity", "attribute_name")}
    with pytest.raises(ValueError, match="results_nusc.json"):
        zero_velocity_results({"results": [box]})


def test_zero_velocity_reference_of_exact_boxes(tiny_world, val_infos, tmp_path, capsys):
    """Exact boxes (the GT's, velocity included) against the same boxes standing still: every match and
    every other error is shared, and each matched box's velocity error becomes its object's speed."""
    from bevlm.evaluation.det_bootstrap import TP_METRICS
    from tests.evaluation.test_nuscenes_det_metric import LABELS, _gt_samples
    from tools.compare_det import main

    classes = _classes(val_infos)
    run = tmp_path / "run"
    _score(tiny_world, val_infos, _gt_samples(val_infos), str(run))
    cfg = tmp_path / "det.py"
    cfg.write_text(f"test_evaluator = dict(type='NuScenesDetMetric', data_root={tiny_world!r}, version='v1.0-mini', "
                   f"class_range={RANGE}, class_names={classes!r})\n")
    stored = (run / "results_nusc.json").read_text()
    ref = tmp_path / "zero"
    assert main(["--zero-velocity", str(cfg), str(run), str(ref)]) == 0
    assert "| mAVE |" in capsys.readouterr().out
    assert (run / "results_nusc.json").read_text() == stored  # the run's files are kept
    a, z = DetectionMatches.load(str(run)), DetectionMatches.load(str(ref))
    assert np.array_equal(a.det_match, z.det_match) and np.array_equal(a.det_conf, z.det_conf)
    vel = list(TP_METRICS).index("vel_err")
    tp = ~np.isnan(a.errors[vel])
    assert tp.sum() > 0 and np.allclose(a.errors[vel][tp], 0.0, atol=1e-6)  # exact velocities
    # the reference's velocity error of each match is the speed of its object (= the exact box's speed)
    speeds = sorted(math.hypot(*i["velocity"]) for f in val_infos["data_list"] for i in f["instances"]
                    if i["num_lidar_pts"] > 0 and LABELS[i["bbox_label_3d"]] in classes
                    and math.hypot(*i["bbox_3d"][:2]) < RANGE)
    got = np.sort(z.errors[vel][~np.isnan(z.errors[vel])])
    assert len(got) == tp.sum() and max(speeds) > 0.5
    assert np.allclose(got, speeds, atol=1e-4)
    for k in ("mAP", "mATE", "mASE", "mAOE"):
        assert score_matches(z)[k] == score_matches(a)[k]
    assert score_matches(z)["mAVE"] > score_matches(a)["mAVE"] + 0.1
    # OUT may not be the run's own folder
    with pytest.raises(SystemExit, match="own folder"):
        main(["--zero-velocity", str(cfg), str(run), str(run)])
