# Baseline (b) at CLIP-like token counts: 6 cameras x 64 patch tokens (an 8x8 grid of the finest
# feature map per camera) = 384 LLM visual tokens, each through a token-wise MLP (LLaVA-1.5's
# connector, no pooling), as a CLIP-based driving VLM feeds its LLM. Against the BEV path's 36 tokens
# it measures what the BEV saves in prefill (docs/research/baselines.md).
_base_ = ["../bev_vlm.py"]
model = dict(
    vision="camera",
    det_head=None, perception_text=None,  # no BEV: no detections written into the prefix
    camera_tokens=dict(type="CameraPatchTokens", in_dims=64, num_cams=6, tokens_per_cam=64, grid_hw=(8, 8)),
    projector=dict(_delete_=True, type="TokenMLPProjector", in_dims=64, num_tokens=384),
)
train_dataloader = dict(dataset=dict(queue_length=1))
