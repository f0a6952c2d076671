# The default (configs/bev_vlm.py, plan line) whose trajectory head takes the driving command (go
# straight / turn left / turn right, nuScenes planners' convention, derived from the recorded future as
# ST-P3, UniAD and VAD do) as an input of its one shared plan: the command one-hot joins the ego status on
# the head's direct ego-status path (traj_head.command_input=True), as the ego_mlp_cmd reference planner
# takes it (tools/planning_baselines.py --modes ego_mlp_cmd). The command reaches the trajectory head
# alone, never the LLM's prefix; the plan line is written from the head's plan, so a plan that turns when
# the route turns may also write the behaviour and safe-action answers right more often.
# On the 300-iteration combined recipe, seed 0: L2 -0.029 m [-0.056, -0.007] * (docs/research/trajectory.md).
#   python tools/sweep.py configs/sweeps/command_input.py --seeds 0 1 2 --records docs/results/runs
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=dict(num_commands=3, command_input=True))
