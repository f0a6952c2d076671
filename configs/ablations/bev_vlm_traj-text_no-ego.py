# Text waypoints without the ego-status token (the honest open-loop planning setting).
_base_ = ["./bev_vlm_traj-text.py"]
model = dict(use_ego_status=False)
