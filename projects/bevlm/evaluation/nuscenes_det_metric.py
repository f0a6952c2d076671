"""The official nuScenes detection metric (mAP, NDS, TP errors) through nuscenes-devkit.

Predictions (ego-frame boxes ``(x, y, z, l, w, h, yaw, vx, vy)`` of a detector's
``pred_instances_3d``) are written in the official results format
(https://www.nuscenes.org/object-detection: global ``translation``, ``size`` as (w, l, h),
``rotation`` quaternion, global ``velocity``, ``detection_name``, ``detection_score``,
``attribute_name``) to ``results_nusc.json``, and scored by the devkit's
``DetectionEval`` (Caesar et al., "nuScenes: A multimodal dataset for autonomous
driving", CVPR 2020). The ground truth is the devkit's own ``load_gt`` logic restricted
to the evaluated sample tokens (``load_gt_of_sample_tokens``), so the split is whatever
the test dataset holds: the val scenes of the mini world (whose scene names the devkit's
hard-coded splits do not know) or the official val split of real nuScenes. Attributes
are not predicted: each box gets the class's default attribute from its speed, as
mmdet3d's ``NuScenesMetric`` does.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from ..registry import METRICS
from ..structures import scored_samples
from bevlm.utils import atomic_write_json

#: Each prediction's matches, beside ``metrics_summary.json`` (:mod:`.det_bootstrap`).
MATCHES_FILE = "det_matches.npz"

#: mmdet3d ``NuScenesDataset.DefaultAttribute``.
DEFAULT_ATTRIBUTE = {
    "car": "vehicle.parked", "pedestrian": "pedestrian.moving", "trailer": "vehicle.parked",
    "truck": "vehicle.parked", "bus": "vehicle.moving", "motorcycle": "cycle.without_rider",
    "construction_vehicle": "vehicle.parked", "bicycle": "cycle.without_rider", "barrier": "",
    "traffic_cone": "",
}
VEHICLES = ("car", "construction_vehicle", "bus", "truck", "trailer")
CYCLES = ("bicycle", "motorcycle")
TP_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
            "attr_err": "mAAE"}
RESULTS_META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False,
                "use_external": False}


def _as_boxes(boxes, n: int) -> np.ndarray:
    """``[n, 7 or 9]`` float64 boxes (an empty input becomes ``[0, 9]``)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return boxes.reshape(0, 9) if boxes.size == 0 and n == 0 else boxes.reshape(n, -1)


def default_attribute(name: str, velocity: Sequence[float]) -> str:
    """Attribute of a predicted box from its class and speed (mmdet3d's rule, threshold 0.2 m/s)."""
    if float(np.hypot(velocity[0], velocity[1])) > 0.2:
        if name in VEHICLES:
            return "vehicle.moving"
        if name in CYCLES:
            return "cycle.with_rider"
        return DEFAULT_ATTRIBUTE[name]
    if name == "pedestrian":
        return "pedestrian.standing"
    if name == "bus":
        return "vehicle.stopped"
    return DEFAULT_ATTRIBUTE[name]


def ego_boxes_to_nusc(sample_token: str, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                      ego2global: np.ndarray, label_names: Sequence[str]) -> list[dict]:
    """Ego-frame boxes of one sample -> official detection result dicts (global frame).

    Args:
        sample_token: the nuScenes sample token.
        boxes: ``[n, 9]`` (x, y, z, l, w, h, yaw, vx, vy) in the sample's ego frame (``[n, 7]``:
            zero velocity).
        scores: ``[n]`` detection scores; labels: ``[n]`` indices into ``label_names``.
        ego2global: 4x4 pose of the sample's ego frame.
        label_names: class name of each label; names that are not nuScenes detection classes
            (e.g. ``traffic_light``) are dropped.

    Returns:
        list of dicts with the keys of the official results format.
    """
    from nuscenes.eval.detection.constants import DETECTION_NAMES
    from pyquaternion import Quaternion

    boxes = _as_boxes(boxes, len(scores))
    rot = np.asarray(ego2global, dtype=np.float64)[:3, :3]
    ego_q = Quaternion(matrix=rot, atol=1e-6)
    out = []
    for box, score, label in zip(boxes, np.asarray(scores), np.asarray(labels)):
        name = label_names[int(label)] if 0 <= int(label) < len(label_names) else None
        if name not in DETECTION_NAMES:
            continue
        x, y, z, length, width, height, yaw = box[:7]
        vel_ego = np.array([box[7], box[8], 0.0]) if box.shape[0] >= 9 else np.zeros(3)
        centre = np.asarray(ego2global, dtype=np.float64) @ np.array([x, y, z, 1.0])
        q = ego_q * Quaternion(axis=[0.0, 0.0, 1.0], angle=float(yaw))
        vel = (rot @ vel_ego)[:2]
        out.append({
            "sample_token": sample_token, "translation": centre[:3].tolist(),
            "size": [float(width), float(length), float(height)], "rotation": q.elements.tolist(),
            "velocity": vel.tolist(), "detection_name": name, "detection_score": float(score),
            "attribute_name": default_attribute(name, vel),
        })
    return out


def zero_velocity_results(results: dict) -> dict:
    """A copy of an official results dict whose boxes all stand still: the velocity reference.

    Every box keeps its place, size, rotation, class and score; its ``velocity`` becomes
    ``[0, 0]`` and its ``attribute_name`` the class's attribute at zero speed
    (:func:`default_attribute`). Scored on the same frames, it has the detector's mAP and tells
    what the velocity branch adds: its mAVE is the speed of the matched objects, the error of a
    detector that predicts no motion (``tools/compare_det.py --zero-velocity``).

    Args:
        results: ``{"meta": ..., "results": {sample_token: [box dict, ...]}}`` (the
            ``results_nusc.json`` the metric writes). It is not modified.

    Returns:
        the new results dict (same meta, same tokens, same box order).
    """
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise ValueError("zero_velocity_results: expected the official results format, a dict with a "
                         "`results` dict of {sample_token: [boxes]}; pass the content of results_nusc.json")
    out = {}
    for token, boxes in results["results"].items():
        out[token] = [{**b, "velocity": [0.0, 0.0],
                       "attribute_name": default_attribute(b["detection_name"], (0.0, 0.0))} for b in boxes]
    return {**results, "results": out}


def build_detection_config(eval_config: str = "detection_cvpr_2019", class_range=None,
                           class_names: Sequence[str] | None = None):
    """The devkit's ``DetectionConfig``, with the range and the classes of the evaluated data.

    Args:
        eval_config: name of a devkit config (``config_factory``).
        class_range: None (the config's), a number (metres, every class) or ``{class: metres}``.
        class_names: the classes that enter mAP / NDS (None: the config's 10); the mini world
            has no trailer or construction vehicle, so its configs list the 8 it has.

    Returns:
        ``nuscenes.eval.detection.data_classes.DetectionConfig``.
    """
    from nuscenes.eval.common.config import config_factory

    cfg = config_factory(eval_config)
    if class_range is not None:
        ranges = ({k: float(class_range) for k in cfg.class_range} if np.isscalar(class_range)
                  else {**cfg.class_range, **{k: float(v) for k, v in dict(class_range).items()}})
        unknown = set(ranges) - set(cfg.class_range)
        if unknown:
            raise ValueError(f"NuScenesDetMetric: class_range names {sorted(unknown)}, which are not nuScenes "
                             f"detection classes {sorted(cfg.class_range)}; fix `class_range`.")
        cfg.class_range = ranges
    if class_names is not None:
        unknown = [c for c in class_names if c not in cfg.class_range]
        if unknown or not class_names:
            raise ValueError(f"NuScenesDetMetric: class_names {list(class_names)} must be a non-empty subset of "
                             f"{sorted(cfg.class_range)}; fix `class_names`.")
        cfg.class_names = list(class_names)
    return cfg


def _detection_eval_class():
    from nuscenes.eval.detection.evaluate import DetectionEval

    class SampleTokenDetectionEval(DetectionEval):
        """``DetectionEval`` on an explicit list of sample tokens.

        The devkit's constructor maps a split *name* to scenes through its hard-coded
        official scene lists; this one loads the predictions and the GT of the given samples
        (``load_prediction_of_sample_tokens`` / ``load_gt_of_sample_tokens``, the devkit's own
        loaders), then adds centre distances and filters exactly as the constructor does.
        ``evaluate()`` is the devkit's, unchanged.
        """

        def __init__(self, nusc, config, result_path: str, sample_tokens: Sequence[str],
                     output_dir: str | None = None) -> None:  # noqa: D107 (see the class docstring)
            from nuscenes.eval.common.loaders import (add_center_dist, filter_eval_boxes,
                                                      load_gt_of_sample_tokens,
                                                      load_prediction_of_sample_tokens)
            from nuscenes.eval.detection.data_classes import DetectionBox

            self.nusc, self.result_path, self.eval_set = nusc, result_path, "sample_tokens"
            self.output_dir, self.verbose, self.cfg = output_dir, False, config
            tokens = list(dict.fromkeys(sample_tokens))
            pred, self.meta = load_prediction_of_sample_tokens(result_path, config.max_boxes_per_sample,
                                                               DetectionBox, sample_tokens=tokens)
            gt = load_gt_of_sample_tokens(nusc, tokens, DetectionBox)
            # (the devkit's filter cannot tell the box type of a set without boxes: nothing to filter)
            self.pred_boxes = (filter_eval_boxes(nusc, add_center_dist(nusc, pred), config.class_range)
                               if pred.all else pred)
            self.gt_boxes = (filter_eval_boxes(nusc, add_center_dist(nusc, gt), config.class_range)
                             if gt.all else gt)
            self.sample_tokens = self.gt_boxes.sample_tokens

    return SampleTokenDetectionEval


def evaluate_nusc_results(nusc, result_path: str, sample_tokens: Sequence[str], config,
                          output_dir: str | None = None, matches_path: str | None = None) -> dict:
    """Run the devkit's detection evaluation on ``sample_tokens`` (GT of exactly those samples).

    Args:
        nusc: a loaded ``NuScenes``.
        result_path: official results JSON holding every token of ``sample_tokens``.
        sample_tokens: the evaluated samples.
        config: a ``DetectionConfig`` (:func:`build_detection_config`).
        output_dir: where ``metrics_summary.json`` goes (None: not written).
        matches_path: where each prediction's matches go (:mod:`.det_bootstrap`, from the boxes this
            evaluation loaded; None: not written).

    Returns:
        the devkit's ``DetectionMetrics.serialize()`` dict (``mean_ap``, ``nd_score``, ``tp_errors``,
        ``mean_dist_aps``, ``label_aps``, ``label_tp_errors``, ...).
    """
    with open(result_path, encoding="utf-8") as f:
        stored = json.load(f).get("results", {})
    missing = [t for t in sample_tokens if t not in stored]
    if missing:
        raise KeyError(f"{result_path}: no results for {len(missing)} evaluated samples (first: {missing[0]}); "
                       "the results format needs every sample, with an empty list where nothing was detected")
    ev = _detection_eval_class()(nusc, config, result_path, sample_tokens, output_dir)
    metrics, _ = ev.evaluate()
    summary = metrics.serialize()
    if matches_path:
        from .det_bootstrap import matches_of_eval
        matches_of_eval(ev, nusc, sample_tokens, config).save(matches_path)
    if output_dir:
        atomic_write_json(summary, os.path.join(output_dir, "metrics_summary.json"))
    return summary


@METRICS.register_module()
class NuScenesDetMetric(BaseMetric):
    """nuScenes detection score of ``pred_instances_3d`` on the test dataset's samples.

    Args:
        data_root: nuScenes-format root holding ``<version>/`` (the mini world's folder).
        version: database version, e.g. ``v1.0-mini`` (mini world) or ``v1.0-trainval``.
        eval_config: devkit detection config name.
        class_range: evaluation range override (None, metres, or ``{class: metres}``); the
            mini world's BEV covers +-32 m, so its configs pass 32.
        class_names: classes of mAP / NDS (None: all 10 of the config).
        label_names: class name of each predicted label (None: the dataset's
            ``metainfo['classes']``, else the info converter's ``CLASSES``).
        outfile_prefix: folder of ``results_nusc.json``, ``metrics_summary.json`` and
            ``det_matches.npz`` (each prediction's matches, for the paired bootstrap of
            :mod:`.det_bootstrap`; None: a temporary folder, removed afterwards).
        collect_device, prefix: see ``mmengine.evaluator.BaseMetric``.
    """

    default_prefix = "nuscenes"

    def __init__(self, data_root: str, version: str = "v1.0-trainval", eval_config: str = "detection_cvpr_2019",
                 class_range=None, class_names: Sequence[str] | None = None,
                 label_names: Sequence[str] | None = None, outfile_prefix: str | None = None,
                 collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.data_root, self.version = data_root, version
        self.config = build_detection_config(eval_config, class_range, class_names)  # fail early
        self.label_names = tuple(label_names) if label_names is not None else None
        self.outfile_prefix = outfile_prefix

    def _label_names(self) -> tuple:
        if self.label_names is not None:
            return self.label_names
        if self.dataset_meta and self.dataset_meta.get("classes"):
            return tuple(self.dataset_meta["classes"])
        from bevlm.datasets.converters.nuscenes_infos import CLASSES
        return CLASSES

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Keep each sample's token and its predicted ego boxes (numpy)."""
        for sample in scored_samples(data_samples):
            if hasattr(sample, "to_dict"):
                sample = sample.to_dict()
            pred = sample.get("pred_instances_3d")
            if pred is None or not sample.get("token"):
                raise KeyError("NuScenesDetMetric: a data sample lacks `token` or `pred_instances_3d`; evaluate a "
                               "detector (e.g. BEVDet) whose predict() fills pred_instances_3d.")
            arr = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v) for k, v in pred.items()}
            scores = arr["scores_3d"].reshape(-1)
            self.results.append(dict(token=str(sample["token"]), scores=scores,
                                     boxes=_as_boxes(arr["bboxes_3d"], len(scores)),  # [n, 9]
                                     labels=arr["labels_3d"].reshape(-1)))

    def compute_metrics(self, results: list) -> dict:
        """Write ``results_nusc.json``, run ``DetectionEval``; returns NDS, mAP, TP errors, per-class AP."""
        from nuscenes.nuscenes import NuScenes

        from bevlm.datasets.converters.nuscenes_infos import NuScenesInfoBuilder

        table_dir = os.path.join(self.data_root, self.version)
        if not os.path.isdir(table_dir):
            raise FileNotFoundError(f"NuScenesDetMetric: {table_dir} does not exist; set the metric's `data_root` "
                                    f"and `version` to the database the test infos were built from.")
        nusc = NuScenes(version=self.version, dataroot=self.data_root, verbose=False)
        builder = NuScenesInfoBuilder(nusc)
        names = self._label_names()
        nusc_results: dict[str, list] = {}
        for r in results:
            ego2global = builder.sample_ego2global(nusc.get("sample", r["token"]))
            nusc_results.setdefault(r["token"], []).extend(
                ego_boxes_to_nusc(r["token"], r["boxes"], r["scores"], r["labels"], ego2global, names))
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = self.outfile_prefix or tmp
            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, "results_nusc.json")
            atomic_write_json({"meta": RESULTS_META, "results": nusc_results}, path)
            # with a folder, also each prediction's matches: the input of tools/compare_det.py's bootstrap
            summary = evaluate_nusc_results(nusc, path, list(nusc_results), self.config,
                                            out_dir if self.outfile_prefix else None,
                                            os.path.join(out_dir, MATCHES_FILE) if self.outfile_prefix else None)
        metrics = {"NDS": summary["nd_score"], "mAP": summary["mean_ap"]}
        metrics.update({short: summary["tp_errors"][k] for k, short in TP_NAMES.items()})
        metrics.update({f"AP_{c}": float(ap) for c, ap in summary["mean_dist_aps"].items()})
        lines = [f"{c:<22} AP {ap:.3f}  " + "  ".join(
            f"{TP_NAMES[k][1:]} {summary['label_tp_errors'][c][k]:.3f}" for k in TP_NAMES)
            for c, ap in summary["mean_dist_aps"].items()]
        print_log(f"nuScenes detection on {len(nusc_results)} samples: NDS {metrics['NDS']:.4f} mAP "
                  f"{metrics['mAP']:.4f}\n" + "\n".join(lines), logger="current")
        return metrics
