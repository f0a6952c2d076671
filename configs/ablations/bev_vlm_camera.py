# Baseline (b): CLIP-style per-camera 2D patch tokens from the same backbone + neck, at the same
# token budget as the BEV path (6 cameras x 6 tokens = 36), through a learned-query resampler.
_base_ = ["../bev_vlm.py"]
model = dict(
    vision="camera",
    det_head=None, perception_text=None,  # no BEV: no detections written into the prefix
    camera_tokens=dict(type="CameraPatchTokens", in_dims=64, num_cams=6, tokens_per_cam=6),
    projector=dict(_delete_=True, type="ResamplerProjector", in_dims=64, num_queries=36,
                   num_layers=1, num_heads=4),
)
train_dataloader = dict(dataset=dict(queue_length=1))
