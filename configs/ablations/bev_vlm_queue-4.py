# BEV-level temporal fusion trained on a queue of T=4 frames (3 history frames under no_grad);
# testing streams the previous BEV, so the per-frame cost does not depend on T.
_base_ = ["../bev_vlm.py"]
train_dataloader = dict(dataset=dict(queue_length=4))
