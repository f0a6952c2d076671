# GPU schedule: bf16 autocast through mmengine's AmpOptimWrapper (CUDA only; fp32 master weights,
# the frozen LLM base held in bf16), AdamW, warm-up + cosine. Iteration counts are per process
# (torchrun / tools/dist_train.sh): with 8 GPUs x batch 1, 20000 iterations are about 3 passes over
# the ~4k DriveLM-nuScenes train key frames' QA chunks. Not yet measured on a GPU: the time and
# memory figures of docs/real_data.md are estimates until tools/device_check.sh has run.
max_iters = 20000
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=100000)
val_cfg = None
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    type="AmpOptimWrapper",
    dtype="bfloat16",
    optimizer=dict(type="AdamW", lr=2e-4, weight_decay=0.01),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={
        "img_backbone": dict(lr_mult=0.1),
        "img_neck": dict(lr_mult=0.1),
        "bev_encoder": dict(lr_mult=0.1),
    }),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=500, end=max_iters, eta_min_ratio=0.05),
]
