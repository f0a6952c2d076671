# GPU schedule of the real-scale stage-1 detector: bf16 AmpOptimWrapper (CUDA only), AdamW 2e-4 as
# BEVFormer, backbone at 0.1x. 8 GPUs x batch 1: one pass over the 28130 nuScenes train key frames
# is ~3500 iterations per process; 84000 iterations are ~24 epochs (BEVFormer-tiny's schedule).
max_iters = 84000
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=100000)
val_cfg = None
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    type="AmpOptimWrapper",
    dtype="bfloat16",
    optimizer=dict(type="AdamW", lr=2e-4, weight_decay=0.01),
    clip_grad=dict(max_norm=35.0),
    paramwise_cfg=dict(custom_keys={"img_backbone": dict(lr_mult=0.1)}),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=500, end=max_iters, eta_min_ratio=1e-3),
]
