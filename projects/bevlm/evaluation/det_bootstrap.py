"""Paired bootstrap of the nuScenes detection scores (NDS, mAP, TP errors) over scenes and frames.

The devkit's ``DetectionEval`` scores one set of frames. To say whether one detector beats another
on the same val frames by more than the luck of the draw of those frames, the frames are
resampled as in :mod:`.bootstrap` (scenes with replacement, then frames within each drawn scene)
and both detectors are re-scored on every resample.

Re-running the devkit thousands of times would take hours; this module runs its matching once.
In ``nuscenes.eval.detection.algo.accumulate`` a prediction is matched greedily, in the order of
descending confidence over all frames, to the closest unmatched ground-truth box *of its own
frame*. Whether a prediction is a true positive, and its errors, therefore depend only on its
frame's boxes: :func:`match_detections` records them once per class and distance threshold
(:class:`DetectionMatches`), and :func:`score_matches` turns any frame weights into the devkit's
numbers. A frame drawn twice counts as two copies of it: its predictions are repeated in place
in the devkit's confidence order and its ground-truth boxes count twice. The precision / recall
curves, their interpolation, ``calc_ap``, ``calc_tp`` and the NDS are the devkit's own
(``DetectionMetricData``, ``DetectionMetrics``), so with every frame at weight 1, or a subset of
frames at 1 and the rest at 0, the scores equal ``DetectionEval``'s on those frames exactly
(tested).

The matches are stored as ``det_matches.npz`` beside a test run's ``metrics.json`` (a few hundred
kilobytes: frame, class, confidence, match flags and TP errors per prediction; read with
``allow_pickle=False``, so the file cannot run code), and ``tools/compare_det.py`` compares runs
from them, seeds pooled.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .nuscenes_det_metric import MATCHES_FILE, _detection_eval_class
#: The devkit's TP error names, in the order of :attr:`DetectionMatches.errors`.
TP_METRICS = ("trans_err", "vel_err", "scale_err", "orient_err", "attr_err")
#: Summary names (as ``NuScenesDetMetric`` reports them) of the TP errors.
TP_SHORT = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
#: Scores where lower is better (the others: higher is better).
LOWER_IS_BETTER = tuple(TP_SHORT.values())


@dataclass
class DetectionMatches:
    """One run's predictions matched to the ground truth, per class and distance threshold.

    Predictions are grouped by class, each group in the devkit's order (descending confidence,
    ties: the later prediction first).

    Attributes:
        tokens: ``[F]`` sample tokens of the evaluated frames.
        scenes: ``[F]`` scene token of each frame.
        classes: the evaluated class names (``config.class_names``).
        dist_ths: the matching thresholds (m) of the AP.
        dist_th_tp: the threshold whose matches give the TP errors.
        min_recall, min_precision, mean_ap_weight: the devkit config's values.
        gt_count: ``[C, F]`` ground-truth boxes of each class in each frame (after the devkit's filters).
        det_class: ``[D]`` class index of each prediction.
        det_frame: ``[D]`` frame index of each prediction.
        det_conf: ``[D]`` its confidence.
        det_match: ``[T, D]`` whether it is a true positive at each threshold of ``dist_ths``.
        errors: ``[5, D]`` its TP errors (order :data:`TP_METRICS`) at ``dist_th_tp``; NaN where it
            is not a true positive there.
    """

    tokens: np.ndarray
    scenes: np.ndarray
    classes: tuple
    dist_ths: tuple
    dist_th_tp: float
    min_recall: float
    min_precision: float
    mean_ap_weight: float
    gt_count: np.ndarray
    det_class: np.ndarray
    det_frame: np.ndarray
    det_conf: np.ndarray
    det_match: np.ndarray
    errors: np.ndarray

    def save(self, path: str) -> None:
        """Write the matches as a compressed ``.npz`` (plain arrays only; written atomically)."""
        tmp = path + ".tmp.npz"
        np.savez_compressed(tmp, tokens=self.tokens.astype(str), scenes=self.scenes.astype(str),
                            classes=np.array(self.classes, dtype=str), dist_ths=np.array(self.dist_ths, float),
                            params=np.array([self.dist_th_tp, self.min_recall, self.min_precision,
                                             self.mean_ap_weight], float),
                            gt_count=self.gt_count, det_class=self.det_class, det_frame=self.det_frame,
                            det_conf=self.det_conf, det_match=self.det_match, errors=self.errors)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "DetectionMatches":
        """Read a file of :meth:`save` (no pickled objects: nothing in it can run code).

        Raises:
            FileNotFoundError / ValueError: a missing file, or one that is not such a file (the
                message names the file and how to make it).
        """
        if os.path.isdir(path):
            path = os.path.join(path, MATCHES_FILE)
        hint = ("it is written by tools/test.py with a NuScenesDetMetric (next to metrics.json), or by "
                "`tools/compare_det.py --matches-from CONFIG RUN_DIR` from the run's results_nusc.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no detection matches file; {hint}")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a detection matches file ({err}); {hint}") from err
        need = {"tokens", "scenes", "classes", "dist_ths", "params", "gt_count", "det_class", "det_frame",
                "det_conf", "det_match", "errors"}
        if need - set(arrays):
            raise ValueError(f"{path}: missing arrays {sorted(need - set(arrays))}; {hint}")
        dist_th_tp, min_recall, min_precision, weight = (float(v) for v in arrays["params"])
        return cls(tokens=arrays["tokens"], scenes=arrays["scenes"], classes=tuple(arrays["classes"].tolist()),
                   dist_ths=tuple(float(d) for d in arrays["dist_ths"]), dist_th_tp=dist_th_tp,
                   min_recall=min_recall, min_precision=min_precision, mean_ap_weight=weight,
                   gt_count=arrays["gt_count"], det_class=arrays["det_class"], det_frame=arrays["det_frame"],
                   det_conf=arrays["det_conf"], det_match=arrays["det_match"], errors=arrays["errors"])


def match_detections(gt_boxes, pred_boxes, config, sample_tokens: Sequence[str],
                     scene_of: dict[str, str]) -> DetectionMatches:
    """The devkit's matching of every prediction, recorded per prediction.

    Args:
        gt_boxes, pred_boxes: the devkit's ``EvalBoxes`` after ``add_center_dist`` and
            ``filter_eval_boxes`` (as ``DetectionEval`` holds them).
        config: the ``DetectionConfig``.
        sample_tokens: the evaluated frames (their order is the frame index).
        scene_of: sample token -> scene token.

    Returns:
        :class:`DetectionMatches`.
    """
    from nuscenes.eval.common.utils import attr_acc, center_distance, scale_iou, velocity_l2, yaw_diff

    tokens = list(dict.fromkeys(sample_tokens))
    frame_of = {t: i for i, t in enumerate(tokens)}
    classes = tuple(config.class_names)
    dist_ths = tuple(float(d) for d in config.dist_ths)
    if config.dist_th_tp not in dist_ths:
        raise ValueError(f"match_detections: dist_th_tp {config.dist_th_tp} is not one of dist_ths {dist_ths}")
    gt_count = np.zeros((len(classes), len(tokens)), dtype=np.int64)
    with_gt = set(gt_boxes.sample_tokens)
    for t in tokens:
        for box in (gt_boxes[t] if t in with_gt else []):
            if box.detection_name in classes:
                gt_count[classes.index(box.detection_name), frame_of[t]] += 1
    det_class, det_frame, det_conf, det_match, errors = [], [], [], [], []
    for c, name in enumerate(classes):
        preds = [box for box in pred_boxes.all if box.detection_name == name]
        confs = [box.detection_score for box in preds]
        order = [i for (_, i) in sorted((v, i) for (i, v) in enumerate(confs))][::-1]  # the devkit's sort
        flags = np.zeros((len(dist_ths), len(order)), dtype=bool)
        errs = np.full((len(TP_METRICS), len(order)), np.nan)
        for k, dist_th in enumerate(dist_ths):
            taken = set()
            for j, ind in enumerate(order):
                pred = preds[ind]
                min_dist, match = np.inf, None
                for g, gt in enumerate(gt_boxes[pred.sample_token]):
                    if gt.detection_name == name and (pred.sample_token, g) not in taken:
                        d = config.dist_fcn_callable(gt, pred)
                        if d < min_dist:
                            min_dist, match = d, g
                if min_dist < dist_th:
                    taken.add((pred.sample_token, match))
                    flags[k, j] = True
                    if dist_th == config.dist_th_tp:
                        gt = gt_boxes[pred.sample_token][match]
                        period = np.pi if name == "barrier" else 2 * np.pi
                        errs[:, j] = [center_distance(gt, pred), velocity_l2(gt, pred), 1 - scale_iou(gt, pred),
                                      yaw_diff(gt, pred, period=period), 1 - attr_acc(gt, pred)]
        det_class += [c] * len(order)
        det_frame += [frame_of[preds[i].sample_token] for i in order]
        det_conf += [preds[i].detection_score for i in order]
        det_match.append(flags)
        errors.append(errs)
    return DetectionMatches(
        tokens=np.array(tokens, dtype=str), scenes=np.array([scene_of[t] for t in tokens], dtype=str),
        classes=classes, dist_ths=dist_ths, dist_th_tp=float(config.dist_th_tp),
        min_recall=float(config.min_recall), min_precision=float(config.min_precision),
        mean_ap_weight=float(config.mean_ap_weight), gt_count=gt_count,
        det_class=np.array(det_class, dtype=np.int64), det_frame=np.array(det_frame, dtype=np.int64),
        det_conf=np.array(det_conf, dtype=np.float64),
        det_match=np.concatenate(det_match, axis=1) if det_match else np.zeros((len(dist_ths), 0), bool),
        errors=np.concatenate(errors, axis=1) if errors else np.zeros((len(TP_METRICS), 0)))


def _metric_data(conf: np.ndarray, match: np.ndarray, errors: np.ndarray | None, npos: int):
    """The devkit's ``accumulate`` from here on: PR curve, interpolation, TP-error curves."""
    from nuscenes.eval.common.utils import cummean
    from nuscenes.eval.detection.data_classes import DetectionMetricData

    if npos == 0 or not match.any():
        return DetectionMetricData.no_predictions()
    tp = np.cumsum(match.astype(np.int64)).astype(float)
    fp = np.cumsum((~match).astype(np.int64)).astype(float)
    prec = tp / (fp + tp)
    rec = tp / float(npos)
    rec_interp = np.linspace(0, 1, DetectionMetricData.nelem)
    prec = np.interp(rec_interp, rec, prec, right=0)
    conf_interp = np.interp(rec_interp, rec, conf, right=0)
    curves = {}
    matched_conf = conf[match]
    for k, key in enumerate(TP_METRICS):
        if errors is None:
            curves[key] = np.zeros(DetectionMetricData.nelem)
            continue
        tmp = cummean(errors[k][match])
        curves[key] = np.interp(conf_interp[::-1], matched_conf[::-1], tmp[::-1])[::-1]
    return DetectionMetricData(recall=rec_interp, precision=prec, confidence=conf_interp, **curves)


def score_matches(m: DetectionMatches, weights: np.ndarray | None = None) -> dict[str, float]:
    """NDS, mAP, the five TP errors and the per-class AP of the frames weighted by ``weights``.

    Args:
        m: the run's :class:`DetectionMatches`.
        weights: ``[F]`` non-negative integers (how often each frame counts; None: all 1).

    Returns:
        ``{"NDS", "mAP", "mATE", ..., "AP_<class>"}`` as ``NuScenesDetMetric`` names them.
    """
    from nuscenes.eval.detection.algo import calc_ap, calc_tp
    from nuscenes.eval.detection.constants import DETECTION_NAMES
    from nuscenes.eval.detection.data_classes import DetectionConfig, DetectionMetrics

    n_frames = len(m.tokens)
    w = np.ones(n_frames, dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    if w.shape != (n_frames,) or (w < 0).any():
        raise ValueError(f"score_matches: weights must be {n_frames} non-negative integers, got shape {w.shape}")
    # (the ranges were applied when matching; the devkit's config wants all ten classes, the
    # evaluated ones are class_names, as build_detection_config sets them)
    cfg = DetectionConfig(class_range={c: 1.0 for c in DETECTION_NAMES}, dist_fcn="center_distance",
                          dist_ths=list(m.dist_ths), dist_th_tp=m.dist_th_tp, min_recall=m.min_recall,
                          min_precision=m.min_precision, max_boxes_per_sample=500,
                          mean_ap_weight=int(m.mean_ap_weight))
    cfg.class_names = list(m.classes)
    metrics = DetectionMetrics(cfg)
    rep = np.repeat(np.arange(len(m.det_conf)), w[m.det_frame])  # predictions repeated in place
    cls_of = m.det_class[rep]
    for c, name in enumerate(m.classes):
        sel = rep[cls_of == c]
        npos = int((m.gt_count[c] * w).sum())
        conf = m.det_conf[sel]
        for k, dist_th in enumerate(m.dist_ths):
            tp_thr = dist_th == m.dist_th_tp
            md = _metric_data(conf, m.det_match[k, sel], m.errors[:, sel] if tp_thr else None, npos)
            metrics.add_label_ap(name, dist_th, calc_ap(md, m.min_recall, m.min_precision))
            if tp_thr:
                for metric_name in TP_METRICS:
                    if name == "traffic_cone" and metric_name in ("attr_err", "vel_err", "orient_err"):
                        tp = np.nan
                    elif name == "barrier" and metric_name in ("attr_err", "vel_err"):
                        tp = np.nan
                    else:
                        tp = calc_tp(md, m.min_recall, metric_name)
                    metrics.add_label_tp(name, metric_name, tp)
    out = {"NDS": float(metrics.nd_score), "mAP": float(metrics.mean_ap)}
    out.update({TP_SHORT[k]: float(v) for k, v in metrics.tp_errors.items()})
    out.update({f"AP_{c}": float(v) for c, v in metrics.mean_dist_aps.items()})
    return out


def matches_of_eval(ev, nusc, sample_tokens: Sequence[str], config) -> DetectionMatches:
    """:class:`DetectionMatches` of the boxes a ``DetectionEval`` of
    :func:`.nuscenes_det_metric.evaluate_nusc_results` holds (loaded and filtered as it scores them)."""
    tokens = list(dict.fromkeys(sample_tokens))
    scene_of = {t: nusc.get("sample", t)["scene_token"] for t in tokens}
    return match_detections(ev.gt_boxes, ev.pred_boxes, config, tokens, scene_of)


def matches_of_results(nusc, result_path: str, sample_tokens: Sequence[str], config) -> DetectionMatches:
    """:class:`DetectionMatches` of an official results file, loaded and filtered exactly as
    :func:`.nuscenes_det_metric.evaluate_nusc_results` scores it."""
    return matches_of_eval(_detection_eval_class()(nusc, config, result_path, sample_tokens), nusc,
                           sample_tokens, config)


def check_same_frames(runs: Sequence[DetectionMatches], names: Sequence[str]) -> None:
    """Every run scored the same frames, in the same order, with the same classes and thresholds."""
    ref, ref_name = runs[0], names[0]
    for run, name in zip(runs[1:], names[1:]):
        if run.tokens.tolist() != ref.tokens.tolist():
            raise ValueError(f"{name}: its {len(run.tokens)} frames are not {ref_name}'s {len(ref.tokens)} (a paired "
                             "comparison needs the same val frames; test both on the same split)")
        if (run.classes, run.dist_ths, run.dist_th_tp) != (ref.classes, ref.dist_ths, ref.dist_th_tp):
            raise ValueError(f"{name}: classes / thresholds differ from {ref_name}'s (evaluate both with the same "
                             "NuScenesDetMetric settings)")


def paired_det_bootstrap(refs: Sequence[DetectionMatches], runs: Sequence[DetectionMatches],
                         resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                         names: tuple[Sequence[str], Sequence[str]] | None = None) -> dict:
    """Seeds-pooled paired two-stage cluster bootstrap of ``mean(runs) - mean(refs)``.

    Each resample draws the scenes, then frames within them (:func:`.bootstrap.cluster_resample`),
    re-scores every run of both groups on it and takes the difference of the group means.

    Args:
        refs: the reference runs (e.g. its seeds), all on the same frames.
        runs: the compared runs, on the same frames.
        resamples, seed, alpha: bootstrap size, its RNG seed, 1 - the interval's coverage.
        names: labels of ``refs`` and ``runs`` for the error messages.

    Returns:
        ``{metric: {"ref", "run", "diff", "low", "high", "significant", "ref_each", "run_each"}}``,
        ``ref`` / ``run`` the group means on the full frame set.
    """
    from .bootstrap import cluster_resample

    if not refs or not runs:
        raise ValueError("paired_det_bootstrap: needs at least one reference run and one compared run")
    names = names or ([f"ref {i}" for i in range(len(refs))], [f"run {i}" for i in range(len(runs))])
    check_same_frames(list(refs) + list(runs), list(names[0]) + list(names[1]))
    scene_ids = {s: i for i, s in enumerate(dict.fromkeys(refs[0].scenes.tolist()))}
    frame_scene = np.array([scene_ids[s] for s in refs[0].scenes.tolist()])
    full_ref = [score_matches(r) for r in refs]
    full_run = [score_matches(r) for r in runs]
    keys = list(full_ref[0])
    draws = {k: [] for k in keys}
    for w in cluster_resample(frame_scene, resamples, seed):
        a = [score_matches(r, w) for r in refs]
        b = [score_matches(r, w) for r in runs]
        for k in keys:
            draws[k].append(np.mean([x[k] for x in b]) - np.mean([x[k] for x in a]))
    out = {}
    for k in keys:
        d = np.asarray(draws[k])
        low, high = (float(np.nanpercentile(d, 100 * alpha / 2)), float(np.nanpercentile(d, 100 * (1 - alpha / 2))))
        ref_mean = float(np.mean([x[k] for x in full_ref]))
        run_mean = float(np.mean([x[k] for x in full_run]))
        out[k] = {"ref": ref_mean, "run": run_mean, "diff": run_mean - ref_mean, "low": low, "high": high,
                  "significant": bool(low > 0 or high < 0),
                  "ref_each": [x[k] for x in full_ref], "run_each": [x[k] for x in full_run]}
    return out
