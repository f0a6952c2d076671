# The trajectory head without its direct ego-status path: the waypoints come from the LLM's readout
# of the trajectory tokens alone (the ego status still enters the LLM as the ego token). This was
# the default before the ego prior (traj_head.ego_prior_dims=5) was; the head dict is replaced whole
# so that the config equals that earlier default key by key (trainings of it are reused by sweeps).
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=dict(_delete_=True, type="TrajectoryTokenHead", num_tokens=6, horizon=6))
