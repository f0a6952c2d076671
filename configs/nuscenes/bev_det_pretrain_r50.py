# Real-scale stage 1 on nuScenes (docs/real_data.md): backbone + FPN + BEVFormer-lite + CenterPoint
# head on every key frame of the official nuScenes train scenes (info files written WITHOUT
# --drivelm-json into data/nuscenes/infos_det), scored with nuscenes-devkit's detection metric on
# the official val scenes.
#   bash tools/dist_train.sh configs/nuscenes/bev_det_pretrain_r50.py 8
_base_ = [
    "../_base_/models/bev_det_r50.py",
    "../_base_/datasets/nuscenes.py",
    "../_base_/schedules/det_gpu_bf16.py",
    "../_base_/default_runtime.py",
]
train_dataloader = dict(
    batch_size=1,
    dataset=dict(ann_file="infos_det/bevlm_infos_train.pkl", qa_mode="none", require_qa=False,
                 test_format_repeats=0, queue_length=3),
)
test_dataloader = dict(
    dataset=dict(ann_file="infos_det/bevlm_infos_val.pkl", qa_mode="none", require_qa=False,
                 qa_select="all", frame_stride=1, queue_length=1),
)
# nuScenes' own per-class evaluation ranges (detection_cvpr_2019)
test_evaluator = [dict(type="NuScenesDetMetric", data_root={{_base_.data_root}}, version="v1.0-trainval",
                       outfile_prefix="work_dirs/bev_det_pretrain_r50/test")]
val_dataloader = None
val_evaluator = None
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=50),
    checkpoint=dict(type="SafeCheckpointHook", interval=2000, by_epoch=False, max_keep_ckpts=3, save_last=True),
)
