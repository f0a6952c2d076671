"""Kinematic extrapolation of the ego status into future waypoints (torch, batched).

``ego_status = [vx, vy, ax, ay, yaw_rate]`` in the current ego frame (x forward, y left, SI units),
as the info files store it. Used as a non-learned planning reference
(:mod:`bevlm.evaluation.planning_baselines`) and as the base the trajectory head adds its learned
offsets to (``TrajectoryTokenHead(kinematic_prior=...)``).
"""
from __future__ import annotations

import torch
from torch import Tensor

KINEMATIC_MODES = ("constant_velocity", "ctra")


def kinematic_waypoints(ego_status: Tensor, steps: int = 6, dt: float = 0.5, mode: str = "ctra",
                        substeps: int = 10) -> Tensor:
    """``[..., steps, 2]`` future positions at ``dt, 2 dt, ...`` from ``ego_status [..., >=5]``.

    ``constant_velocity``: ``(vx, vy) t``. ``ctra``: constant turn rate and acceleration along the
    motion, speed clamped at 0 (a braking car stops and stays), midpoint-rule integration with
    ``substeps`` steps per waypoint (exact in speed, O(h^2) along the arc).
    """
    if mode not in KINEMATIC_MODES:
        raise ValueError(f"kinematic_waypoints: mode {mode!r} is not one of {KINEMATIC_MODES}")
    if ego_status.shape[-1] < 5:
        raise ValueError(f"kinematic_waypoints: ego_status needs [vx, vy, ax, ay, yaw_rate] in its last "
                         f"dimension, got shape {tuple(ego_status.shape)}")
    vx, vy, ax, ay, yaw_rate = ego_status[..., :5].unbind(-1)
    if mode == "constant_velocity":
        t = dt * torch.arange(1, steps + 1, dtype=ego_status.dtype, device=ego_status.device)
        return torch.stack([vx[..., None] * t, vy[..., None] * t], -1)
    speed = torch.hypot(vx, vy)
    moving = speed > 1e-6
    heading = torch.where(moving, torch.atan2(vy, vx), torch.zeros_like(speed))
    along = torch.where(moving, (ax * vx + ay * vy) / speed.clamp_min(1e-6), ax)
    h = dt / substeps
    x, y = torch.zeros_like(speed), torch.zeros_like(speed)
    out = []
    for k in range(steps * substeps):
        raw = speed + along * h
        nxt = raw.clamp_min(0.0)
        # average speed over the substep; a car that stops inside it covers speed^2 / (2 |a|)
        mid = torch.where(raw >= 0, 0.5 * (speed + nxt), speed * speed / (2 * along.abs().clamp_min(1e-12) * h))
        th = heading + yaw_rate * (h / 2)
        x = x + mid * torch.cos(th) * h
        y = y + mid * torch.sin(th) * h
        speed, heading = nxt, heading + yaw_rate * h
        if (k + 1) % substeps == 0:
            out.append(torch.stack([x, y], -1))
    return torch.stack(out, -2)
