# The QA graph in at most 3 structured rounds (perception -> prediction -> planning + behavior),
# trained and evaluated in that format (bevlm.models.qa.policy).
_base_ = ["../bev_vlm.py"]
model = dict(qa_policy=dict(mode="three_rounds"))
