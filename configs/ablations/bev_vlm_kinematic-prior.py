# The default's kinematic prior (CTRA extrapolation of the ego status + learned offsets) with the offset
# layers randomly initialised instead of starting at zero: the untrained head is CTRA plus noise. The
# head dict is replaced whole so the config equals the run of it that was recorded (key by key).
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=dict(_delete_=True, type="TrajectoryTokenHead", num_tokens=6, horizon=6, ego_prior_dims=5,
                            kinematic_prior="ctra"))
