# The device check's CPU rehearsal (bash tools/device_check.sh --cpu): device_check.py with the
# plain fp32 optimizer wrapper (mmengine's AmpOptimWrapper needs CUDA), gloo and 2 iterations.
_base_ = ["./device_check.py"]
optim_wrapper = dict(_delete_=True, type="OptimWrapper", optimizer=dict(type="AdamW", lr=2e-4, weight_decay=0.01),
                     clip_grad=dict(max_norm=1.0))
env_cfg = dict(dist_cfg=dict(backend="gloo"))
max_iters = 2
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=max_iters)]
default_hooks = dict(checkpoint=dict(interval=max_iters))
train_dataloader = dict(num_workers=0, persistent_workers=False, pin_memory=False)
test_dataloader = dict(num_workers=0, dataset=dict(max_frames=1))
