# Stage 1: perception pretraining of backbone + FPN + BEVFormer-lite with a CenterPoint detection
# head, no LLM, on the mini world's train scenes; scored with the official nuScenes detection
# metric (nuscenes-devkit DetectionEval) on the val scenes:
#   python tools/train.py configs/bev_det_pretrain.py
#   python tools/test.py configs/bev_det_pretrain.py work_dirs/bev_det_pretrain/iter_1000.pth
# A stage-2 BEV-VLM starts from it with `load_from` (same img_backbone / img_neck / bev_encoder
# / aux_head keys).
_base_ = [
    "_base_/models/bev_det.py",
    "_base_/datasets/mini_world.py",
    "_base_/schedules/det_pretrain.py",
    "_base_/default_runtime.py",
]

# Cheap iterations: single frames (queue_length=1: temporal self-attention runs without a
# previous BEV) at the BEV-VLM's 160x90 input (the stage-2 model must see the images at the
# size its vision side was trained at), so that a 2-core CPU does ~1000 iterations in 10-15 min.
det_img_size = {{_base_.img_size}}
det_pipeline = [
    dict(type="LoadMultiViewImages"),
    dict(type="ResizeMultiViewImages", size=det_img_size),
    dict(type="PackDriveInputs"),
]
# one item per key frame, boxes only (no QA); frames without DriveLM QA are used too
train_dataloader = dict(
    batch_size=2,
    dataset=dict(qa_mode="none", require_qa=False, test_format_repeats=0, queue_length=1,
                 pipeline=det_pipeline),
)
# every key frame of the val scenes (48), as in training
test_dataloader = dict(
    dataset=dict(qa_mode="none", require_qa=False, qa_select="all", frame_stride=1, stream_skipped=False, queue_length=1,
                 pipeline=det_pipeline),
)
# the mini world has 8 of the 10 nuScenes detection classes (no trailer, no construction
# vehicle); its BEV covers +-32 m, so every class is evaluated within 32 m of the ego
test_evaluator = [dict(
    type="NuScenesDetMetric",
    data_root={{_base_.data_root}},
    version="v1.0-mini",
    class_range=32.0,
    class_names=["car", "truck", "bus", "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone"],
    # results_nusc.json and metrics_summary.json (the default work dir's test folder)
    outfile_prefix="work_dirs/bev_det_pretrain/test",
)]
# no validation loop during training (tools/test.py evaluates the val scenes)
val_dataloader = None
val_evaluator = None
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=20),
    checkpoint=dict(type="SafeCheckpointHook", interval=200, by_epoch=False, max_keep_ckpts=2, save_last=True),
)
