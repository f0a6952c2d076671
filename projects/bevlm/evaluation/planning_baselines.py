"""Non-learned planning references: the ego status extrapolated by a kinematic model.

Open-loop planning metrics reward continuing the current motion (the ego status alone is a strong
planner on nuScenes), so a learned planner's L2 means little without the L2 of that extrapolation
on the same frames. Two models, both from ``ego_status = [vx, vy, ax, ay, yaw_rate]`` (current ego
frame, x forward, y left, SI units, as the info files store it):

- ``constant_velocity``: ``p(t) = (vx, vy) t``;
- ``ctra``: constant turn rate and (longitudinal) acceleration, speed clamped at 0 (a braking car
  stops and stays), integrated with the midpoint rule (exact for the speed, error O(h^2) in the arc).

:func:`planning_reference` scores them with :class:`PlanningMetric` on a dataset's frames and
:func:`compare_planning` pairs a test run's per-frame planning records with them (two-stage cluster
bootstrap over scenes and frames). ``tools/planning_baselines.py`` is the command line.
"""
from __future__ import annotations

import numpy as np
import torch

from ..structures import KINEMATIC_MODES as MODES
from ..structures import kinematic_waypoints
from .bootstrap import cluster_resample
from .planning_metric import PlanningMetric, planning_summary

__all__ = ["MODES", "kinematic_plan", "planning_reference", "summarize_records", "compare_planning"]


def kinematic_plan(ego_status, steps: int = 6, dt: float = 0.5, mode: str = "ctra",
                   substeps: int = 10) -> np.ndarray:
    """``[steps, 2]`` future ego positions at ``dt, 2 dt, ...`` in the current ego frame
    (:func:`bevlm.structures.kinematic_waypoints` in float64)."""
    ego = torch.as_tensor(np.asarray(ego_status, np.float64).reshape(-1))
    return kinematic_waypoints(ego, steps, dt, mode, substeps).numpy()


def planning_reference(samples, mode: str) -> list[dict]:
    """Per-frame records of :class:`PlanningMetric` (token, scene_token, l2, collision, mask) of the
    kinematic plan of each sample (``ego_status``, ``gt_traj``, ``gt_traj_mask``, agent boxes)."""
    metric = PlanningMetric()
    for sample in samples:
        steps = int(sample.gt_traj.shape[0])
        sample.pred_traj = np.asarray(kinematic_plan(sample.ego_status.numpy(), steps=steps, mode=mode), np.float32)
        metric.process(None, [sample])
    return metric.results


def _arrays(records: list[dict]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack([np.asarray(r[k], float) for r in records]) for k in ("l2", "collision", "mask"))


def summarize_records(records: list[dict]) -> dict[str, float]:
    l2, col, mask = _arrays(records)
    out = planning_summary(l2, col, mask, np.ones((1, len(records))))
    return {k: float(v[0]) for k, v in out.items()}


def compare_planning(reference: list[dict], run: dict, resamples: int = 2000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """``run - reference`` for every planning metric on the frames both have, with a paired two-stage
    cluster bootstrap interval (scenes, then frames within them).

    Args:
        reference: per-frame records (:func:`planning_reference`).
        run: a test run's ``per_frame.json`` ``planning`` section (token -> record with ``l2``,
            ``collision``, ``gt_traj_mask``, ``scene_token``).

    Raises:
        ValueError: a reference frame is missing from the run (other split: the fix is named).
    """
    missing = [r["token"] for r in reference if r["token"] not in run]
    if missing:
        raise ValueError(f"compare_planning: {len(missing)} of the reference's {len(reference)} frames are not "
                         f"in the run (e.g. {missing[:3]}). Fix: score the run on the same test split")
    other = [{"l2": run[r["token"]]["l2"], "collision": run[r["token"]]["collision"],
              "mask": run[r["token"]]["gt_traj_mask"]} for r in reference]
    scenes = {s: i for i, s in enumerate(dict.fromkeys(r["scene_token"] for r in reference))}
    weights = np.vstack([np.ones((1, len(reference))),
                         cluster_resample(np.array([scenes[r["scene_token"]] for r in reference]), resamples, seed)])
    a, b = planning_summary(*_arrays(reference), weights), planning_summary(*_arrays(other), weights)
    out = {}
    for key in a:
        diff = b[key] - a[key]
        boot = diff[1:][np.isfinite(diff[1:])]
        lo, hi = (np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if len(boot) else (np.nan, np.nan))
        out[key] = {"reference": float(a[key][0]), "run": float(b[key][0]), "diff": float(diff[0]),
                    "lo": float(lo), "hi": float(hi), "significant": bool(lo > 0 or hi < 0)}
    return {"frames": len(reference), "scenes": len(scenes), "resamples": resamples, "metrics": out}
