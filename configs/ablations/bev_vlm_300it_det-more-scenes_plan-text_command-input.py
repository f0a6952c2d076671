# The plan line written from a better plan: the plan-text recipe
# (configs/ablations/bev_vlm_300it_det-more-scenes_plan-text.py, exact match 0.521 in seed 0) whose
# trajectory head also takes the driving command as an input of its one shared plan
# (configs/ablations/bev_vlm_300it_det-more-scenes_command-input.py, L2 0.332 m in seed 0, -0.029 *
# against the combined recipe). The line is written from the head's plan, so a plan that turns when
# the route turns should also write the right behaviour and safe actions more often. The command
# reaches the trajectory head alone (and, through its plan, the line), never the prefix directly.
#   python tools/sweep.py configs/sweeps/det_scenes.py --seeds 0 1 2 --only bev_vlm_300it_det-more-scenes_plan-text_command-input
_base_ = ["./bev_vlm_300it_det-more-scenes_plan-text.py"]
model = dict(traj_head=dict(num_commands=3, command_input=True))
