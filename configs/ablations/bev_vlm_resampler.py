# Learned-query resampler projector instead of pooling + MLP (same 36 tokens).
_base_ = ["../bev_vlm.py"]
model = dict(projector=dict(_delete_=True, type="ResamplerProjector", in_dims=64, num_queries=36,
                            num_layers=1, num_heads=4))
