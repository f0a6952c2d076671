# BEV-level temporal fusion trained on a queue of T=8 frames (7 history frames under no_grad).
_base_ = ["../bev_vlm.py"]
train_dataloader = dict(dataset=dict(queue_length=8))
