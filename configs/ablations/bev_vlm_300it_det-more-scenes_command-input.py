# The driving command as an input of one shared plan, instead of one plan per command: the combined
# recipe (configs/ablations/bev_vlm_300it_det-more-scenes.py) whose trajectory head feeds the command
# one-hot to its direct ego-status path (traj_head.command_input=True), as the ego_mlp_cmd reference
# planner takes it (tools/planning_baselines.py --modes ego_mlp_cmd: 0.328 m against 0.354 without).
# The per-command plans of configs/ablations/bev_vlm_300it_det-more-scenes_command.py gained on
# straight frames in every seed but their turn-right plan, trained on the 16 turn-right frames of the
# training split alone, varied from seed to seed (L2 0.343 ± 0.030 m over three seeds, not separated
# from 0.361 without the command; docs/research/trajectory.md). Here every frame trains the same
# weights. The command still reaches the trajectory head alone, never the LLM's prefix.
#   python tools/sweep.py configs/sweeps/det_scenes.py --seeds 0 1 2 --only bev_vlm_300it_det-more-scenes_command-input
_base_ = ["./bev_vlm_300it_det-more-scenes.py"]
model = dict(traj_head=dict(num_commands=3, command_input=True))
