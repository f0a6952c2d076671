# The combined recipe (configs/ablations/bev_vlm_300it_det-more-scenes.py) with the driving command of
# nuScenes open-loop planning: the trajectory head plans once per command (turn left / turn right / go
# straight) and the frame's command picks the plan (traj_head.num_commands=3, as VAD's planner does).
# The command is derived from the future waypoints (the last known one beyond +-2 m to a side is a
# turn: bevlm.structures.driving_command, the ST-P3 / UniAD / VAD protocol): it stands for the route a
# navigation system would give. It reaches the trajectory head alone, never the LLM's prefix, so the
# QA answers cannot read it. Planning with and without it is reported side by side
# (docs/research/trajectory.md); the ego-status reference given the same command is
# tools/planning_baselines.py --modes ego_mlp_cmd. Seed 0 (2026-12-06): L2 0.361 -> 0.315 m
# (-0.046 [-0.089, -0.009] *), level with ego_mlp_cmd (0.328 m); collisions and answers unchanged.
# Seeds 0, 1, 2: L2 0.343 ± 0.030 m, -0.018 [-0.056, +0.016] against the recipe without the command,
# not separated (the turn-right branch, trained on 16 frames, varies from seed to seed).
#   python tools/sweep.py configs/sweeps/det_scenes.py --seeds 0 1 2 --only bev_vlm_300it_det-more-scenes_command
_base_ = ["./bev_vlm_300it_det-more-scenes.py"]
model = dict(traj_head=dict(num_commands=3))
