"""The high-level driving command of open-loop planning on nuScenes.

ST-P3, UniAD and VAD give their planners a navigation command (turn left / turn right / go
straight), as a route planner would, and derive it from the ground-truth future: the lateral offset
of the last known future waypoint beyond +-2 m means a turn (VAD's nuScenes converter). Without it
a planner cannot know at a junction which way the route goes, and the ego status extrapolated
(CTRA) misses every turn onset. The command says nothing about when to brake or how fast to go.

Frames here are the current ego frame (x forward, y left), as the info files store
``ego_fut_traj``; a positive lateral offset is to the left.
"""
from __future__ import annotations

import numpy as np

#: Command names, in the order of their indices.
COMMANDS = ("turn left", "turn right", "go straight")
#: Lateral offset (m) of the last known future waypoint beyond which the command is a turn.
TURN_THRESHOLD_M = 2.0


def driving_command(fut_traj, fut_mask=None, threshold: float = TURN_THRESHOLD_M) -> int:
    """Index into :data:`COMMANDS` of one frame's command.

    Args:
        fut_traj: ``[T, 2]`` future ego waypoints (x forward, y left, m) in the current ego frame.
        fut_mask: ``[T]`` truthy where the waypoint is known (None: all known).
        threshold: lateral offset (m) of a turn.

    Returns:
        0 (turn left) when the last known waypoint is more than ``threshold`` to the left, 1 (turn
        right) when more than ``threshold`` to the right, else 2 (go straight; also with no known
        waypoint, the frames at the end of a recording).
    """
    traj = np.asarray(fut_traj, np.float64).reshape(-1, 2)
    mask = np.ones(len(traj), bool) if fut_mask is None else np.asarray(fut_mask).reshape(-1) > 0
    if mask.shape[0] != traj.shape[0]:
        raise ValueError(f"driving_command: fut_traj has {traj.shape[0]} waypoints, fut_mask {mask.shape[0]}")
    known = np.flatnonzero(mask)
    if not len(known):
        return 2
    lateral = float(traj[known[-1], 1])
    if lateral > threshold:
        return 0
    if lateral < -threshold:
        return 1
    return 2
