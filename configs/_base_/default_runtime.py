default_scope = "bevlm"
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", interval=50, by_epoch=False, max_keep_ckpts=2,
                    save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    # checkpoints in plain types (they load with weights_only=True: no checkpoint can run code);
    # tools/test.py turns on strict_load (a checkpoint that does not fit the model stops the test)
    plain_checkpoint=dict(type="PlainCheckpointHook"),
)
log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
