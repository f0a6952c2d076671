# Trajectory as decoded text waypoints instead of the trajectory-token head (same model otherwise).
_base_ = ["../bev_vlm.py"]
model = dict(traj_head=None, traj_source="text", plan_text=None)  # no head: no plan line
