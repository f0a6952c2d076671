# Real-scale stage 2 on nuScenes + DriveLM (docs/real_data.md): the BEV-VLM from the stage-1
# detector (configs/nuscenes/bev_det_pretrain_r50.py), Qwen2.5-0.5B-Instruct from a local directory.
#   bash tools/dist_train.sh configs/nuscenes/bev_vlm_r50_qwen2.5-0.5b.py 8
#   python tools/test.py configs/nuscenes/bev_vlm_r50_qwen2.5-0.5b.py work_dirs/.../iter_20000.pth
# Another LLM under 3B: --cfg-options model.llm.pretrained=checkpoints/Llama-3.2-1B-Instruct
_base_ = [
    "../_base_/models/bev_vlm_r50.py",
    "../_base_/datasets/nuscenes.py",
    "../_base_/schedules/gpu_bf16.py",
    "../_base_/default_runtime.py",
]
load_from = "work_dirs/bev_det_pretrain_r50/iter_84000.pth"
val_dataloader = None
val_evaluator = None
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=50),
    checkpoint=dict(type="SafeCheckpointHook", interval=2000, by_epoch=False, max_keep_ckpts=3, save_last=True),
)
