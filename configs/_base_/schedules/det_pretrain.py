# Stage-1 perception pretraining on a 2-core CPU: many cheap iterations (a batch of 2 frames, no
# LLM) in about 10-15 minutes
# (2-3 s per iteration at 160x90 on a busy 2-core CPU).
max_iters = 300
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=100000)
val_cfg = None
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=10.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.05),
]
