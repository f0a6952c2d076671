"""Non-learned planning references: the ego status extrapolated by a kinematic model.

Open-loop planning metrics reward continuing the current motion (the ego status alone is a strong
planner on nuScenes), so a learned planner's L2 means little without the L2 of that extrapolation
on the same frames. Two models, both from ``ego_status = [vx, vy, ax, ay, yaw_rate]`` (current ego
frame, x forward, y left, SI units, as the info files store it):

- ``constant_velocity``: ``p(t) = (vx, vy) t``;
- ``ctra``: constant turn rate and (longitudinal) acceleration, speed clamped at 0 (a braking car
  stops and stays), integrated with the midpoint rule (exact for the speed, error O(h^2) in the arc);
- ``ego_mlp``: a learned planner that sees the ego status and nothing else (the AD-MLP idea of
  Zhai et al. 2023, "Rethinking the open-loop evaluation of end-to-end autonomous driving in
  nuScenes"): a small MLP from the 5 ego values to per-step offsets added to the CTRA plan, fitted
  on the training split's frames in seconds (:func:`fit_ego_mlp`). What a vision model's planner
  adds beyond it is what it gets from seeing;
- ``ego_mlp_cmd``: the same MLP given the driving command too (turn left / turn right / go
  straight as a one-hot, :func:`bevlm.structures.driving_command`: the route input of the
  ST-P3 / UniAD / VAD protocol), the reference of a planner built with commands.

:func:`planning_reference` scores them with :class:`PlanningMetric` on a dataset's frames and
:func:`compare_planning` pairs a test run's per-frame planning records with them (two-stage cluster
bootstrap over scenes and frames). ``tools/planning_baselines.py`` is the command line.
"""
from __future__ import annotations

import numpy as np
import torch

from ..structures import KINEMATIC_MODES as MODES
from ..structures import COMMANDS, driving_command, kinematic_waypoints
from .bootstrap import cluster_resample
from .planning_metric import PlanningMetric, planning_summary

__all__ = ["MODES", "REFERENCES", "kinematic_plan", "EgoMLPPlanner", "fit_ego_mlp", "planning_reference",
           "rescore_run", "summarize_records", "compare_planning", "compare_planning_runs"]

#: The references :func:`planning_reference` knows: the kinematic models, the ego-status MLPs
#: (without and with the driving command) and the recorded future itself (L2 0; its collision rate
#: is the floor of the collision metric on those frames).
REFERENCES = tuple(MODES) + ("ego_mlp", "ego_mlp_cmd", "recorded_future")


def kinematic_plan(ego_status, steps: int = 6, dt: float = 0.5, mode: str = "ctra",
                   substeps: int = 10) -> np.ndarray:
    """``[steps, 2]`` future ego positions at ``dt, 2 dt, ...`` in the current ego frame
    (:func:`bevlm.structures.kinematic_waypoints` in float64)."""
    ego = torch.as_tensor(np.asarray(ego_status, np.float64).reshape(-1))
    return kinematic_waypoints(ego, steps, dt, mode, substeps).numpy()


def _with_command(ego: np.ndarray, command) -> np.ndarray:
    """``[N, 5 + len(COMMANDS)]``: the ego states with their commands one-hot."""
    onehot = np.eye(len(COMMANDS))[np.asarray(command, int).reshape(-1)]
    return np.concatenate([ego, onehot], 1)


class EgoMLPPlanner:
    """The fitted ego-status planner: ``plan(ego_status) = ctra(ego_status) + mlp(normalised ego_status)``
    (``uses_command``: the MLP's input also holds the driving command, one-hot).

    Attributes:
        epochs: the full-batch AdamW steps of the fit (chosen on held-out training scenes).
        holdout_l2: the held-out scenes' L2 (ST-P3 average, m) of CTRA and of the chosen fit.
    """

    def __init__(self, net, mean: np.ndarray, std: np.ndarray, steps: int, dt: float, epochs: int,
                 holdout_l2: dict, uses_command: bool = False):
        self.net, self.mean, self.std, self.steps, self.dt = net, mean, std, steps, dt
        self.epochs, self.holdout_l2, self.uses_command = epochs, holdout_l2, uses_command

    def __call__(self, ego_status, command=None) -> np.ndarray:
        """``[steps, 2]`` plan of one frame (``[N, steps, 2]`` for ``[N, 5]`` ego states); ``command``
        (index or ``[N]`` indices into :data:`bevlm.structures.COMMANDS`) is needed when
        ``uses_command``."""
        ego = np.asarray(ego_status, np.float64)
        batch = ego.reshape(-1, ego.shape[-1])
        base = np.stack([kinematic_plan(e, self.steps, self.dt, "ctra") for e in batch])
        if self.uses_command:
            if command is None:
                raise ValueError("EgoMLPPlanner: this planner was fitted with the driving command; pass command")
            batch = _with_command(batch, command)
        with torch.no_grad():
            x = torch.as_tensor((batch - self.mean) / self.std, dtype=torch.float32)
            offset = self.net(x).view(len(batch), self.steps, 2).double().numpy()
        out = base + offset
        return out[0] if ego.ndim == 1 else out


def _stp3_l2(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """``L2_avg_stp3`` of plans ``[N, T, 2]`` as :class:`PlanningMetric` scores it (valid steps only)."""
    l2 = np.linalg.norm(pred - gt, axis=-1)
    return float(planning_summary(l2, np.zeros_like(l2), mask, np.ones((1, len(l2))))["L2_avg_stp3"][0])


def fit_ego_mlp(frames, steps: int = 6, dt: float = 0.5, hidden: int = 64, lr: float = 3e-3,
                weight_decay: float = 1e-2, max_epochs: int = 2000, every: int = 25, holdout: int = 3,
                seed: int = 0, command: bool = False) -> EgoMLPPlanner:
    """Fit the ego-status planner on training frames.

    Every ``holdout``-th training scene (sorted tokens) is held out to choose the number of
    full-batch steps (evaluated every ``every`` steps, ST-P3 L2 of the held-out frames); the planner
    is then refitted on all frames for that many steps. Masked L1 loss on the offsets to CTRA.
    Nothing of the test split is used.

    Args:
        frames: dicts with ``ego_status`` [5], ``ego_fut_traj`` [steps, 2], ``ego_fut_mask`` [steps]
            and ``scene_token`` (the info files' keys).
        command: also give the MLP each frame's driving command (derived from its future, as the
            data pipeline derives it).

    The fit runs under its own random state (``seed``); the caller's is left as it was.

    Raises:
        ValueError: fewer than 2 training scenes, or no frame with a known future.
    """
    frames = list(frames)
    ego = np.array([np.asarray(f["ego_status"], np.float64).reshape(-1) for f in frames])
    gt = np.array([np.asarray(f["ego_fut_traj"], np.float64)[:steps] for f in frames])
    mask = np.array([np.asarray(f["ego_fut_mask"], np.float64)[:steps] > 0 for f in frames])
    scenes = sorted({f["scene_token"] for f in frames})
    if len(scenes) < 2 or not mask.any():
        raise ValueError(f"fit_ego_mlp: {len(frames)} training frames in {len(scenes)} scenes with "
                         f"{int(mask.sum())} known future steps; it needs 2 or more scenes with known futures. "
                         "Fix: point the config's train_dataloader.dataset at the training split")
    base = np.stack([kinematic_plan(e, steps, dt, "ctra") for e in ego])
    if command:
        ego = _with_command(ego, [driving_command(f["ego_fut_traj"], f["ego_fut_mask"]) for f in frames])
    held = {s for k, s in enumerate(scenes) if k % holdout == holdout - 1}
    is_held = np.array([f["scene_token"] in held for f in frames])

    def train(sel: np.ndarray, epochs: int, probe: np.ndarray | None = None):
        torch.manual_seed(seed)
        mean, std = ego[sel].mean(0), ego[sel].std(0) + 1e-6
        net = torch.nn.Sequential(torch.nn.Linear(ego.shape[1], hidden), torch.nn.GELU(),
                                  torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 2 * steps))
        opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=weight_decay)
        x = torch.as_tensor((ego[sel] - mean) / std, dtype=torch.float32)
        target = torch.as_tensor(gt[sel] - base[sel], dtype=torch.float32)
        m = torch.as_tensor(mask[sel][..., None], dtype=torch.float32)
        curve = []
        for epoch in range(1, epochs + 1):
            loss = ((net(x).view(len(x), steps, 2) - target).abs() * m).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if probe is not None and epoch % every == 0:
                with torch.no_grad():
                    x_probe = torch.as_tensor((ego[probe] - mean) / std, dtype=torch.float32)
                    plan = base[probe] + net(x_probe).view(len(x_probe), steps, 2).double().numpy()
                curve.append((_stp3_l2(plan, gt[probe], mask[probe]), epoch))
        return net, mean, std, curve

    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        _, _, _, curve = train(~is_held, max_epochs, probe=is_held)
        best_l2, best_epochs = min(curve)
        net, mean, std, _ = train(np.ones(len(frames), bool), best_epochs)
    holdout_l2 = {"ctra": _stp3_l2(base[is_held], gt[is_held], mask[is_held]),
                  "ego_mlp_cmd" if command else "ego_mlp": best_l2,
                  "scenes": len(held), "frames": int(is_held.sum())}
    return EgoMLPPlanner(net, mean, std, steps, dt, best_epochs, holdout_l2, uses_command=command)


def planning_reference(samples, mode: str, planner=None) -> list[dict]:
    """Per-frame records of :class:`PlanningMetric` (token, scene_token, l2, collision, mask) of the
    reference plan of each sample (``ego_status``, ``gt_traj``, ``gt_traj_mask``, agent boxes):
    a kinematic model (``mode`` in :data:`MODES`) or, for ``mode='ego_mlp'`` / ``'ego_mlp_cmd'``,
    ``planner`` (a fitted :class:`EgoMLPPlanner`; with the command: the samples' ``ego_command``)."""
    if mode not in REFERENCES:
        raise ValueError(f"planning_reference: mode {mode!r} is not one of {REFERENCES}")
    learned = mode in ("ego_mlp", "ego_mlp_cmd")
    if learned and (planner is None or planner.uses_command != (mode == "ego_mlp_cmd")):
        raise ValueError(f"planning_reference(mode={mode!r}) needs the planner fitted for it (fit_ego_mlp on the "
                         f"training frames{', command=True' if mode == 'ego_mlp_cmd' else ''})")
    metric = PlanningMetric()
    for sample in samples:
        steps = int(sample.gt_traj.shape[0])
        ego = sample.ego_status.numpy()
        if learned:
            command = int(sample.ego_command) if planner.uses_command else None
            plan = planner(ego, command)[:steps]
        elif mode == "recorded_future":
            plan = sample.gt_traj.numpy()
        else:
            plan = kinematic_plan(ego, steps=steps, mode=mode)
        sample.pred_traj = np.asarray(plan, np.float32)
        metric.process(None, [sample])
    return metric.results


def rescore_run(samples, planning: dict) -> dict:
    """A recorded run's ``per_frame.json`` ``planning`` section scored again by the current
    :class:`PlanningMetric` from its predicted trajectories (``pred_traj``) on ``samples`` (the same
    test frames with their boxes): for runs recorded before a change of the metric.

    Raises:
        ValueError: a sample's frame is missing from the run, or the run holds no ``pred_traj``.
    """
    metric = PlanningMetric()
    out = {}
    for sample in samples:
        token = sample.metainfo["token"]
        rec = planning.get(token)
        if rec is None or "pred_traj" not in rec:
            raise ValueError(f"rescore_run: frame {token} is {'missing from' if rec is None else 'without pred_traj in'} "
                             "the run. Fix: rescore a run tested on the same split, recorded with its trajectories")
        sample = sample.clone()
        sample.pred_traj = np.asarray(rec["pred_traj"], np.float32)
        metric.process(None, [sample])
        new = metric.results[-1]
        out[token] = dict(rec, l2=new["l2"].tolist(), collision=new["collision"].tolist())
    return out


def _arrays(records: list[dict]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack([np.asarray(r[k], float) for r in records]) for k in ("l2", "collision", "mask"))


def summarize_records(records: list[dict]) -> dict[str, float]:
    l2, col, mask = _arrays(records)
    out = planning_summary(l2, col, mask, np.ones((1, len(records))))
    return {k: float(v[0]) for k, v in out.items()}


def summarize_by_command(planning: dict) -> dict[str, dict]:
    """A run's planning scores on the frames of each driving command.

    The command of a frame is derived from its recorded future (``gt_traj`` / ``gt_traj_mask``,
    :func:`bevlm.structures.driving_command`), as the planners that take a command are given it, so
    the split is the same for every run of a test split, whether the run took the command or not.

    Args:
        planning: a ``per_frame.json`` ``planning`` section (``{token: record}``).

    Returns:
        ``{command name: {"frames": n, **summarize_records(...)}}`` for the commands present, in
        the order of :data:`~bevlm.structures.COMMANDS`.
    """
    groups: dict[int, list] = {}
    for token, rec in planning.items():
        if "gt_traj" not in rec:
            raise ValueError(f"summarize_by_command: frame {token} has no gt_traj. Fix: use a run recorded "
                             "with its trajectories (tools/test.py writes them into per_frame.json)")
        mask = np.asarray(rec.get("gt_traj_mask", np.ones(len(rec["gt_traj"]))), bool)
        groups.setdefault(driving_command(np.asarray(rec["gt_traj"], float), mask), []).append(
            dict(rec, mask=mask.astype(float)))
    return {COMMANDS[c]: {"frames": len(groups[c]), **summarize_records(groups[c])}
            for c in sorted(groups)}


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
    ref = {r["token"]: {"l2": r["l2"], "collision": r["collision"], "gt_traj_mask": r["mask"],
                        "scene_token": r["scene_token"]} for r in reference}
    res = compare_planning_runs([(ref, run)], resamples, seed, alpha)
    return {"frames": res["frames"], "scenes": res["scenes"], "resamples": resamples, "metrics": res["pairs"][0]}


def compare_planning_runs(pairs: list[tuple[dict, dict]], resamples: int = 2000, seed: int = 0,
                          alpha: float = 0.05) -> dict:
    """``run - reference`` of every planning metric for (reference, run) pairs of test runs' planning
    records on the same frames (e.g. one pair per training seed), each pair's and their mean's, with
    paired two-stage cluster bootstrap intervals (scenes, then frames within them; one set of resamples
    for every pair, so the mean's interval covers the frames, not the spread over the pairs).

    What :func:`compare_planning` does against a reference planner, for runs: for the plans of a
    whole split (``tools/test.py --planning-only``), which ``tools/compare.py --planning`` compares.

    Args:
        pairs: ``(reference, run)`` ``per_frame.json`` ``planning`` sections (token -> record with
            ``l2``, ``collision``, ``gt_traj_mask``, ``scene_token``); the first reference's frames are
            the frames compared.

    Returns:
        ``{"frames", "scenes", "resamples", "pairs": [{metric: {...}}, ...], "mean": {metric: {...}}}``;
        each metric's entry holds ``reference``, ``run``, ``diff``, ``lo``, ``hi``, ``significant``.

    Raises:
        ValueError: no pair, or a run lacks a frame of the first reference (the fix is named).
    """
    if not pairs:
        raise ValueError("compare_planning_runs: no (reference, run) pair given")
    tokens = list(pairs[0][0])
    for k, (ref, run) in enumerate(pairs):
        for name, records in (("reference", ref), ("run", run)):
            missing = [t for t in tokens if t not in records]
            if missing:
                raise ValueError(f"compare_planning_runs: pair {k}'s {name} lacks {len(missing)} of the {len(tokens)} "
                                 f"frames compared (e.g. {missing[:3]}). Fix: compare runs planned on the same "
                                 "split (all with tools/test.py --planning-only, or all on the default split)")
    first = pairs[0][0]
    scenes = {s: i for i, s in enumerate(dict.fromkeys(first[t]["scene_token"] for t in tokens))}
    weights = np.vstack([np.ones((1, len(tokens))),
                         cluster_resample(np.array([scenes[first[t]["scene_token"]] for t in tokens]), resamples, seed)])

    def summary(records: dict) -> dict:
        recs = [{"l2": records[t]["l2"], "collision": records[t]["collision"], "mask": records[t]["gt_traj_mask"]}
                for t in tokens]
        return planning_summary(*_arrays(recs), weights)

    def entry(ref_value, run_value, diff):
        boot = diff[1:][np.isfinite(diff[1:])]
        lo, hi = (np.quantile(boot, [alpha / 2, 1 - alpha / 2]) if len(boot) else (np.nan, np.nan))
        return {"reference": float(ref_value), "run": float(run_value), "diff": float(diff[0]), "lo": float(lo),
                "hi": float(hi), "significant": bool(lo > 0 or hi < 0)}

    summaries = [(summary(ref), summary(run)) for ref, run in pairs]
    out_pairs = [{key: entry(a[key][0], b[key][0], b[key] - a[key]) for key in a} for a, b in summaries]
    mean = {}
    for key in summaries[0][0]:
        ref_mean = np.mean([a[key] for a, _ in summaries], axis=0)
        run_mean = np.mean([b[key] for _, b in summaries], axis=0)
        mean[key] = entry(ref_mean[0], run_mean[0], run_mean - ref_mean)
    return {"frames": len(tokens), "scenes": len(scenes), "resamples": resamples, "pairs": out_pairs, "mean": mean}
