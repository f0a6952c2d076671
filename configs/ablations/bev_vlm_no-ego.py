# No ego-status token: the honest planning setting (no shortcut from current speed/yaw rate).
_base_ = ["../bev_vlm.py"]
model = dict(use_ego_status=False)
