"""Trajectories as text: the baseline of the trajectory-token head.

Language-only planners (GPT-Driver, Mao et al., 2023; DriveLM's own planning
QA) ask the LLM for the future waypoints and parse the decoded text. The same
model can be trained that way: one extra QA block per sample whose answer is the
ground-truth trajectory written as ``[(x1, y1), ..., (x6, y6)]`` in metres (ego
frame, x forward, y left, one decimal), and at test time the answer to that
question is decoded greedily and parsed back.
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

#: The question of the trajectory block (not a DriveLM question: never scored as QA).
TRAJ_QUESTION = ("Plan the ego vehicle's trajectory for the next 3 seconds: give 6 waypoints (x, y) "
                 "in meters, 0.5 s apart, in the ego frame.")

_FLOAT = re.compile(r"-?\d+(?:\.\d+)?")


def format_waypoints(traj: Tensor, decimals: int = 1) -> str:
    """``traj [H, 2]`` -> ``"[(1.2, 0.0), (2.5, -0.1), ...]"``."""
    pts = ", ".join(f"({float(x):.{decimals}f}, {float(y):.{decimals}f})" for x, y in traj.tolist())
    return f"[{pts}]"


def parse_waypoints(text: str, horizon: int = 6) -> tuple[Tensor, bool]:
    """Parse decoded text into ``[horizon, 2]`` waypoints.

    The first ``2 * horizon`` numbers are read as (x, y) pairs. A short answer is
    completed by repeating its last waypoint (the origin when nothing parsed), so
    a malformed answer still yields a trajectory, and ``ok`` says whether it was
    complete.

    Returns:
        ``(traj [horizon, 2] float32, ok)``.
    """
    nums = [float(v) for v in _FLOAT.findall(text)][:2 * horizon]
    pts = [nums[i:i + 2] for i in range(0, len(nums) - 1, 2)]
    ok = len(pts) == horizon
    last = pts[-1] if pts else [0.0, 0.0]
    pts = pts + [last] * (horizon - len(pts))
    return torch.tensor(pts, dtype=torch.float32), ok
