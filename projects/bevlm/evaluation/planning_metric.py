"""Open-loop planning metric: L2 error and collision rate at 1 s / 2 s / 3 s.

Trajectories are 6 waypoints at 0.5 s steps in the current ego frame (x forward, y left, m).
Two conventions are reported, as in the literature:

* ST-P3 (Hu et al., ECCV 2022; also VAD): the value at horizon ``h`` is the mean of the per-step
  values over all steps up to ``h`` (1 s -> steps 1-2, 2 s -> 1-4, 3 s -> 1-6);
* UniAD (Hu et al., CVPR 2023): the value at the step of the horizon itself (steps 2, 4, 6).

Per step, a frame counts only if its GT waypoint at that step is valid (``gt_traj_mask``); the
per-step value is the mean over those frames. Collision: the ego box (4.084 m x 1.85 m, the
nuScenes ego footprint used by ST-P3/UniAD), centred on the predicted waypoint and oriented along
the direction of travel, is tested against every agent box of the same step with the separating
axis theorem. Boxes of classes the ego cannot hit are left out (:data:`NON_OBSTACLE_CLASSES`: the
signal heads the mini world annotates 5 m above the road; real nuScenes has no such class), so a
plan that turns under a signal is not a collision. Before 2026-12-06 they were counted: the
recorded ego futures themselves then scored 1.61 % on the default split (3 of 48 frames, all under
signal heads), and every collision rate measured before is that much too high.

With ``outfile_prefix`` (a folder) the metric also writes each frame's record (predicted and GT
trajectory, mask, per-step L2 and collision, keyed by frame token with its scene token) into the
``planning`` section of ``<folder>/per_frame.json``, so that any subset of frames can be scored
again (:mod:`.bootstrap`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from ..registry import METRICS
from ..structures import scored_samples
from .drivelm_files import update_per_frame

#: Box classes (names of ``gt_labels``) left out of the collision test: nothing the ego can hit.
NON_OBSTACLE_CLASSES = ("traffic_light",)
EGO_LENGTH = 4.084
EGO_WIDTH = 1.85
STEP_S = 0.5
HORIZONS_S = (1.0, 2.0, 3.0)


def box_corners(xy: np.ndarray, length: np.ndarray, width: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Corners of oriented boxes.

    Args:
        xy: ``[..., 2]`` centres; length / width / yaw: ``[...]`` (yaw in rad, from +x, CCW).

    Returns:
        ``[..., 4, 2]`` corners, counter-clockwise.
    """
    half = np.stack([length / 2, width / 2], axis=-1)                  # [..., 2]
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)  # [4, 2]
    local = signs * half[..., None, :]                                    # [..., 4, 2]
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]                 # [..., 1]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return np.stack([x, y], axis=-1) + xy[..., None, :]                  # [..., 4, 2]


def boxes_overlap(corners_a: np.ndarray, corners_b: np.ndarray) -> np.ndarray:
    """Separating-axis test for pairs of convex quadrilaterals (boxes that only touch do not overlap).

    Args:
        corners_a, corners_b: ``[..., 4, 2]`` (broadcastable).

    Returns:
        ``[...]`` bool, True where the two boxes intersect with positive area.
    """
    corners_a, corners_b = np.broadcast_arrays(corners_a, corners_b)
    overlap = np.ones(corners_a.shape[:-2], dtype=bool)
    for corners in (corners_a, corners_b):
        for k in range(2):  # two edge directions per rectangle
            edge = corners[..., k + 1, :] - corners[..., k, :]          # [..., 2]
            axis = np.stack([-edge[..., 1], edge[..., 0]], axis=-1)     # [..., 2] edge normal
            pa = np.einsum("...ij,...j->...i", corners_a, axis)          # [..., 4]
            pb = np.einsum("...ij,...j->...i", corners_b, axis)          # [..., 4]
            overlap &= (pa.max(-1) > pb.min(-1)) & (pb.max(-1) > pa.min(-1))
    return overlap


def trajectory_headings(traj: np.ndarray) -> np.ndarray:
    """Heading of travel at each waypoint: direction from the previous point (the origin first).

    A step shorter than 1 cm keeps the previous heading (0 = +x at the start).

    Args:
        traj: ``[T, 2]`` waypoints.

    Returns:
        ``[T]`` yaw in rad.
    """
    prev = np.concatenate([np.zeros((1, 2)), traj[:-1]], axis=0)        # [T, 2]
    delta = traj - prev
    yaw = np.zeros(len(traj))
    last = 0.0
    for t, (dx, dy) in enumerate(delta):
        if np.hypot(dx, dy) >= 1e-2:
            last = float(np.arctan2(dy, dx))
        yaw[t] = last
    return yaw


def ego_collisions(pred_traj: np.ndarray, agent_boxes: np.ndarray) -> np.ndarray:
    """Per-step collision of the ego box along ``pred_traj`` with agent boxes.

    Args:
        pred_traj: ``[T, 2]``.
        agent_boxes: ``[M, T, 5]`` (x, y, l, w, yaw) per future step, NaN where absent.

    Returns:
        ``[T]`` bool.
    """
    T = len(pred_traj)
    ego = box_corners(pred_traj, np.full(T, EGO_LENGTH), np.full(T, EGO_WIDTH),
                      trajectory_headings(pred_traj))                   # [T, 4, 2]
    if agent_boxes.size == 0:
        return np.zeros(T, dtype=bool)
    present = ~np.isnan(agent_boxes).any(-1)                             # [M, T]
    boxes = np.nan_to_num(agent_boxes)
    agents = box_corners(boxes[..., :2], boxes[..., 2], boxes[..., 3], boxes[..., 4])  # [M, T, 4, 2]
    hit = boxes_overlap(ego[None], agents) & present                     # [M, T]
    return hit.any(0)


@METRICS.register_module()
class PlanningMetric(BaseMetric):
    """L2 and collision rate at 1/2/3 s in ST-P3 and UniAD conventions.

    Data samples (dicts or data elements) need ``pred_traj [6, 2]``, ``gt_traj [6, 2]``,
    ``gt_traj_mask [6]`` and optionally ``gt_agent_fut_boxes [M, 6, 5]`` (x, y, l, w, yaw; NaN
    where absent) with their ``gt_labels [M]`` (indices into ``class_names``; boxes of
    :data:`NON_OBSTACLE_CLASSES` are not collision candidates); arrays or tensors.

    Args:
        outfile_prefix: folder to write the per-frame records into (``per_frame.json``, section
            ``planning``); None = do not write. Writing needs ``token`` and ``scene_token`` in the
            data samples.
        collect_device: 'cpu' or 'gpu'.
        prefix: metric name prefix (default ``'planning'``).
        class_names: the names of ``gt_labels`` (None: the info files' classes,
            ``bevlm.datasets.converters.nuscenes_infos.CLASSES``).
    """

    default_prefix = "planning"

    def __init__(self, outfile_prefix: str | None = None, collect_device: str = "cpu",
                 prefix: str | None = None, class_names: Sequence[str] | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix
        if class_names is None:
            from ..datasets.converters.nuscenes_infos import CLASSES as class_names
        #: label indices whose boxes are not collision candidates
        self.ignore_labels = np.array([i for i, n in enumerate(class_names) if n in NON_OBSTACLE_CLASSES], int)

    @staticmethod
    def _array(sample: dict, key: str, shape_tail: tuple, dtype=float) -> np.ndarray:
        if key not in sample:
            raise KeyError(f"PlanningMetric: data sample lacks '{key}' (has {sorted(sample)}). Fix: the "
                           f"model's predict() must set pred_traj and the dataset gt_traj/gt_traj_mask")
        value = sample[key]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        value = value.astype(dtype)
        if shape_tail and value.shape[-len(shape_tail):] != shape_tail:
            raise ValueError(f"PlanningMetric: '{key}' has shape {value.shape}, expected [..., "
                             f"{', '.join(map(str, shape_tail))}]")
        return value

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Compute per-step L2 and collisions of each frame."""
        for sample in scored_samples(data_samples):  # history-only frames are not scored
            if hasattr(sample, "to_dict"):
                sample = sample.to_dict()
            pred = self._array(sample, "pred_traj", (2,))
            gt = self._array(sample, "gt_traj", (2,))
            mask = self._array(sample, "gt_traj_mask", (), dtype=bool).reshape(-1)
            if not (pred.shape == gt.shape and len(mask) == len(gt)):
                raise ValueError(f"PlanningMetric: pred_traj {pred.shape}, gt_traj {gt.shape} and "
                                 f"gt_traj_mask {mask.shape} must agree as [T, 2], [T, 2], [T]")
            boxes = (self._array(sample, "gt_agent_fut_boxes", (5,))
                     if sample.get("gt_agent_fut_boxes") is not None else np.zeros((0, len(gt), 5)))
            boxes = boxes.reshape(-1, len(gt), 5)                               # [M, T, 5]
            if len(boxes) and len(self.ignore_labels):
                if sample.get("gt_labels") is None:
                    raise KeyError("PlanningMetric: gt_agent_fut_boxes without gt_labels: the collision test "
                                   "needs each box's class to leave out signal heads. Fix: pack the items with "
                                   "PackDriveInputs (it sets both)")
                labels = self._array(sample, "gt_labels", (), dtype=int).reshape(-1)
                if len(labels) != len(boxes):
                    raise ValueError(f"PlanningMetric: {len(boxes)} agent boxes but {len(labels)} gt_labels")
                boxes = boxes[~np.isin(labels, self.ignore_labels)]
            self.results.append({
                "token": str(sample.get("token", "")), "scene_token": str(sample.get("scene_token", "")),
                "pred_traj": pred, "gt_traj": gt,                               # [T, 2]
                "l2": np.linalg.norm(pred - gt, axis=-1),                       # [T]
                "collision": ego_collisions(pred, boxes).astype(float),         # [T]
                "mask": mask,
            })

    def compute_metrics(self, results: list) -> dict:
        """Aggregate: per-step means over valid frames, then the two horizon conventions.

        Returns:
            ``L2_{h}s_stp3``, ``L2_{h}s_uniad``, ``collision_{h}s_stp3``, ``collision_{h}s_uniad``
            (collision as a rate 0..1; None where no frame is valid), ``L2_avg_stp3``,
            ``collision_avg_stp3`` (mean over the three horizons) and ``frames``.
        """
        l2 = np.stack([r["l2"] for r in results])                              # [N, T]
        col = np.stack([r["collision"] for r in results])                      # [N, T]
        mask = np.stack([r["mask"] for r in results])                          # [N, T]
        out: dict[str, Any] = {"frames": len(results)}
        summary = planning_summary(l2, col, mask, np.ones((1, len(results))))
        out.update({k: (None if np.isnan(v[0]) else float(v[0])) for k, v in summary.items()})
        if self.outfile_prefix:
            self._write_records(results)
        return out

    def _write_records(self, results: list) -> None:
        """Per-frame records into the ``planning`` section of ``<outfile_prefix>/per_frame.json``."""
        records = {}
        for r in results:
            if not r["token"]:
                raise KeyError("PlanningMetric: a data sample lacks 'token' / 'scene_token', needed for the "
                               "per-frame records of per_frame.json. Fix: pack samples with PackDriveInputs "
                               "(it sets both), or set outfile_prefix=None")
            records[r["token"]] = {
                "scene_token": r["scene_token"],
                "pred_traj": np.asarray(r["pred_traj"], float).tolist(),
                "gt_traj": np.asarray(r["gt_traj"], float).tolist(),
                "gt_traj_mask": [bool(m) for m in r["mask"]],
                "l2": [float(v) for v in r["l2"]],
                "collision": [float(v) for v in r["collision"]],
            }
        update_per_frame(self.outfile_prefix, "planning", records)


def planning_summary(l2: np.ndarray, collision: np.ndarray, mask: np.ndarray,
                     weights: np.ndarray) -> dict[str, np.ndarray]:
    """Horizon metrics of weighted sets of frames (one set per row of ``weights``).

    Per step, the value is the weighted mean over the frames whose GT waypoint at that step is
    valid; then the ST-P3 (mean up to the horizon) and UniAD (value at the horizon) conventions.
    With ``weights`` a row of ones this is the plain metric; a bootstrap passes resample counts.

    Args:
        l2, collision, mask: ``[N, T]`` per-frame, per-step L2 (m), collision (0/1) and validity.
        weights: ``[R, N]`` non-negative frame weights.

    Returns:
        ``{name: [R] array}`` with ``L2_{h}s_stp3``, ``L2_{h}s_uniad``, ``collision_{h}s_stp3``,
        ``collision_{h}s_uniad`` and the ``*_avg_stp3`` means over the horizons; NaN where no
        weighted frame is valid.
    """
    mask = np.asarray(mask, float)
    weights = np.asarray(weights, float)
    valid = weights @ mask                                                     # [R, T]
    with np.errstate(invalid="ignore", divide="ignore"):
        steps_of = {"L2": np.where(valid > 0, (weights @ (l2 * mask)) / valid, np.nan),
                    "collision": np.where(valid > 0, (weights @ (collision * mask)) / valid, np.nan)}
    out: dict[str, np.ndarray] = {}
    avg: dict[str, list] = {"L2": [], "collision": []}
    for h in HORIZONS_S:
        steps = int(round(h / STEP_S))
        if steps > l2.shape[1]:
            continue
        for name, per_step in steps_of.items():
            head = per_step[:, :steps]
            finite = np.isfinite(head)
            with np.errstate(invalid="ignore", divide="ignore"):
                stp3 = np.where(finite.any(1), np.nansum(head, 1) / finite.sum(1), np.nan)
            out[f"{name}_{h:g}s_stp3"] = stp3
            out[f"{name}_{h:g}s_uniad"] = per_step[:, steps - 1]
            avg[name].append(stp3)
    for name, values in avg.items():
        if values:
            stack = np.stack(values, 1)                                        # [R, H]
            finite = np.isfinite(stack)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{name}_avg_stp3"] = np.where(finite.any(1), np.nansum(stack, 1) / finite.sum(1), np.nan)
        else:
            out[f"{name}_avg_stp3"] = np.full(len(weights), np.nan)
    return out
