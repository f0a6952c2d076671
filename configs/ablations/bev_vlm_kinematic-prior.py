# The trajectory as the ego status extrapolated with constant turn rate and acceleration (CTRA, no
# parameters) plus the head's learned offsets (LLM readout + direct ego-status path), instead of the
# learned offsets alone: the head starts from the kinematic reference planner
# (tools/planning_baselines.py) and learns where the scene departs from it.
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=dict(kinematic_prior="ctra"))
