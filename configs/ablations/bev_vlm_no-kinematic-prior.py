# The trajectory head before the kinematic prior became the default: the waypoints are the learned
# offsets alone (LLM readout of the trajectory tokens + the direct ego-status path, ego_prior_dims=5),
# randomly initialised, with no CTRA extrapolation underneath. The head dict is replaced whole so the
# config equals that earlier default key by key (its trainings are reused from the run records).
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=dict(_delete_=True, type="TrajectoryTokenHead", num_tokens=6, horizon=6, ego_prior_dims=5))
