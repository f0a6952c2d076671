# Iteration-based schedule sized for a 2-core CPU (~20 min for the default model: 100 iterations
# of ~12 s, each a batch of 2 frames x 8 questions).
train_cfg = dict(type="IterBasedTrainLoop", max_iters=100, val_interval=100000)
# No validation during training (see configs/bev_vlm.py): evaluate with tools/test.py.
val_cfg = None
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={
        "llm": dict(lr_mult=0.5),
        "img_backbone": dict(lr_mult=0.5),
    }),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=10, end=100, eta_min_ratio=0.05),
]
