# The trajectory-token head placed after the perception and prediction answers instead of at the end
# of the prefix: the 6 query tokens follow the sample's perception / prediction rounds (their
# ground-truth answers in training, the model's own generated answers at test time), so planning is
# conditioned on them; the planning and behavior rounds are never read (model.traj_placement,
# bevlm.models.qa.traj_context). Same model, data and schedule as configs/bev_vlm.py otherwise.
_base_ = ["../bev_vlm.py"]
model = dict(traj_placement="after_qa", plan_text=None)  # no plan line: the plan comes after the answers
