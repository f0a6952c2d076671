# The default model with the official multiple-choice questions answered by decoding the letter, as
# every other question is (the default picks the option the model finds likeliest as the answer to
# the open-ended stem). Test time only: the training is the default's (configs/sweeps/multiple_choice.py
# reuses it).
_base_ = ["../bev_vlm.py"]
model = dict(test_cfg=dict(multiple_choice="generate"))
