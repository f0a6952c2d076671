# No ego status at all: no ego token in the prefix and no direct ego path in the trajectory head (the
# honest planning setting: no shortcut from the current speed / yaw rate).
_base_ = ["../bev_vlm.py"]
model = dict(use_ego_status=False,
             traj_head=dict(_delete_=True, type="TrajectoryTokenHead", num_tokens=6, horizon=6))
