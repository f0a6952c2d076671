# The default model with the official multiple-choice options scored against the answer prior: each
# option's log-probability given the frame minus its log-probability given a content-free frame (the
# mean prefix of 16 training frames spread over the split), i.e. contextual calibration / PMI scoring
# (bevlm.models.qa.multiple_choice). Question: does the behaviour choice, which plain likelihood leaves
# to the answer prior (the same option whatever the frame), follow the frame once the prior is removed?
# Test time only: the training is the default's (configs/sweeps/multiple_choice.py reuses it).
_base_ = ["../bev_vlm.py"]
model = dict(test_cfg=dict(multiple_choice="calibrated"))
