"""nuScenes detection metric: results format, frame conversion and the devkit's scores on the tiny world."""
import json
import math
import os

import numpy as np
import pytest
from pyquaternion import Quaternion

from bevlm.evaluation.nuscenes_det_metric import (NuScenesDetMetric, build_detection_config, default_attribute,
                                                  ego_boxes_to_nusc)
from bevlm.utils import load_plain_pickle

LABELS = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
          "pedestrian", "traffic_cone", "traffic_light")
RANGE = 32.0


def test_ego_to_global_by_hand():
    # ego at (100, 50, 0) heading +90 deg (ego x = global y)
    ego2global = np.eye(4)
    ego2global[:3, :3] = Quaternion(axis=[0, 0, 1], angle=math.pi / 2).rotation_matrix
    ego2global[:3, 3] = [100.0, 50.0, 0.0]
    box = np.array([[10.0, 2.0, 1.0, 4.5, 1.9, 1.6, 0.25, 3.0, 0.0]])
    (res,) = ego_boxes_to_nusc("tok", box, np.array([0.7]), np.array([0]), ego2global, LABELS)
    assert np.allclose(res["translation"], [100.0 - 2.0, 50.0 + 10.0, 1.0])
    assert res["size"] == [1.9, 4.5, 1.6]  # (w, l, h)
    assert math.isclose(Quaternion(res["rotation"]).yaw_pitch_roll[0], math.pi / 2 + 0.25, abs_tol=1e-9)
    assert np.allclose(res["velocity"], [0.0, 3.0])  # ego +x is global +y
    assert res["detection_name"] == "car" and res["detection_score"] == 0.7
    assert res["attribute_name"] == "vehicle.moving"
    # traffic lights are not a detection class: dropped
    assert ego_boxes_to_nusc("tok", box, np.array([0.7]), np.array([10]), ego2global, LABELS) == []


def test_default_attributes_follow_mmdet3d():
    assert default_attribute("car", [0.0, 0.1]) == "vehicle.parked"
    assert default_attribute("bus", [0.0, 0.0]) == "vehicle.stopped"
    assert default_attribute("bicycle", [1.0, 0.0]) == "cycle.with_rider"
    assert default_attribute("motorcycle", [0.0, 0.0]) == "cycle.without_rider"
    assert default_attribute("pedestrian", [0.0, 0.0]) == "pedestrian.standing"
    assert default_attribute("pedestrian", [1.0, 1.0]) == "pedestrian.moving"
    assert default_attribute("traffic_cone", [0.0, 0.0]) == ""


def test_detection_config_range_and_classes():
    cfg = build_detection_config(class_range=RANGE, class_names=["car", "pedestrian"])
    assert set(cfg.class_range.values()) == {RANGE} and list(cfg.class_names) == ["car", "pedestrian"]
    official = build_detection_config()
    assert official.class_range["car"] == 50 and len(list(official.class_names)) == 10
    with pytest.raises(ValueError, match="class_names"):
        build_detection_config(class_names=["traffic_light"])
    with pytest.raises(ValueError, match="class_range"):
        build_detection_config(class_range={"lamp": 10})


@pytest.fixture(scope="module")
def val_infos(tiny_world):
    return load_plain_pickle(os.path.join(tiny_world, "infos", "bevlm_infos_val.pkl"))


def _gt_samples(infos, shift_x=0.0, keep=lambda inst: True):
    """Predicted samples made of the GT boxes (the ones the devkit scores: with points)."""
    samples = []
    for frame in infos["data_list"]:
        inst = [i for i in frame["instances"] if i["num_lidar_pts"] > 0 and keep(i)]
        boxes = np.array([i["bbox_3d"] + list(i["velocity"]) for i in inst], dtype=np.float64).reshape(-1, 9)
        boxes[:, 0] += shift_x
        samples.append(dict(token=frame["token"], pred_instances_3d=dict(
            bboxes_3d=boxes, scores_3d=np.ones(len(boxes)),
            labels_3d=np.array([i["bbox_label_3d"] for i in inst], dtype=np.int64))))
    return samples


def _classes_in_range(infos):
    names = {LABELS[i["bbox_label_3d"]] for f in infos["data_list"] for i in f["instances"]
             if i["num_lidar_pts"] > 0 and math.hypot(*i["bbox_3d"][:2]) < RANGE - 0.5}
    return sorted(names - {"traffic_light"})


def _score(world, infos, samples, out_dir=None):
    metric = NuScenesDetMetric(data_root=world, version="v1.0-mini", class_range=RANGE,
                               class_names=_classes_in_range(infos), outfile_prefix=out_dir)
    metric.dataset_meta = dict(classes=LABELS)
    metric.process(None, samples)
    return metric.compute_metrics(metric.results)


def test_perfect_prediction_scores_one(tiny_world, val_infos, tmp_path):
    assert len(_classes_in_range(val_infos)) >= 2
    m = _score(tiny_world, val_infos, _gt_samples(val_infos), str(tmp_path))
    assert m["mAP"] == pytest.approx(1.0, abs=1e-9)
    for key in ("mATE", "mASE", "mAOE", "mAVE"):
        assert m[key] == pytest.approx(0.0, abs=1e-6), key
    assert m["mAAE"] < 0.3  # default attributes only
    assert m["NDS"] > 0.97
    assert all(v == pytest.approx(1.0) for k, v in m.items() if k.startswith("AP_"))
    # the results file is the official format: the devkit's loader reads it
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    boxes, meta = load_prediction(str(tmp_path / "results_nusc.json"), 500, DetectionBox)
    assert meta["use_camera"] and not meta["use_lidar"]
    assert set(boxes.sample_tokens) == {f["token"] for f in val_infos["data_list"]}
    summary = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert summary["nd_score"] == pytest.approx(m["NDS"])


def test_shifted_boxes_raise_ate_by_the_shift(tiny_world, val_infos):
    m = _score(tiny_world, val_infos, _gt_samples(val_infos, shift_x=0.3))
    assert m["mATE"] == pytest.approx(0.3, abs=1e-6)
    assert m["mASE"] == pytest.approx(0.0, abs=1e-6)
    assert m["mAP"] > 0.9  # 0.3 m is inside every matching threshold (0.5 to 4 m)


def test_empty_prediction_scores_zero(tiny_world, val_infos):
    m = _score(tiny_world, val_infos, _gt_samples(val_infos, keep=lambda inst: False))
    assert m["mAP"] == 0.0 and m["NDS"] == 0.0


def test_missing_inputs_are_named(tiny_world):
    metric = NuScenesDetMetric(data_root=tiny_world, version="v1.0-mini")
    with pytest.raises(KeyError, match="pred_instances_3d"):
        metric.process(None, [dict(token="abc")])
    bad = NuScenesDetMetric(data_root=os.path.join(tiny_world, "nope"), version="v1.0-mini")
    with pytest.raises(FileNotFoundError, match="data_root"):
        bad.compute_metrics([])
