# BEV without temporal self-attention (single frame, no history).
_base_ = ["../bev_vlm.py"]
model = dict(bev_encoder=dict(use_temporal=False))
train_dataloader = dict(dataset=dict(queue_length=1))
