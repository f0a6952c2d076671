# The trajectory head with a direct ego-status path: an MLP maps the ego status (the same 5 values
# the ego token carries) to per-step offsets added to the LLM readout's, so the kinematic part of
# the plan does not have to pass through the LLM (TrajectoryTokenHead.ego_prior_dims). The ego
# token stays in the prefix for the QA. Same model, data and schedule as configs/bev_vlm.py otherwise.
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=dict(ego_prior_dims=5))
