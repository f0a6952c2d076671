# Stage-1 perception pretraining on a 2-core CPU: many cheap iterations (a batch of 2 frames at
# 160x90, no LLM). Measured: 0.6-0.9 s per iteration on an idle 2-core CPU (1000 iterations,
# about 7 epochs of the 144 train frames, in 10-15 minutes); 5-10 s when the cores are shared.
max_iters = 1000
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
