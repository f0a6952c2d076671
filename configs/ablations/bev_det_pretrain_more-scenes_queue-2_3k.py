# The strongest stage 1 so far, with motion: five times the training scenes and 3000 iterations
# (configs/ablations/bev_det_pretrain_more-scenes_3k.py, NDS 0.290 / mAP 0.264, seed 0) with a 2-frame
# temporal queue, so the CenterPoint head's velocity branch sees the previous frame's BEV (aligned by
# the ego motion), and the velocity weighted like the other box channels, as in
# configs/ablations/bev_det_pretrain_queue-2_3k.py (which took NDS 0.168 -> 0.211 on 27 scenes, mAVE
# 2.63 -> 2.10). Velocity is one of NDS's five TP errors and the moving-status answers need it.
# The previous frame runs without gradients; an iteration costs about 1.5x the single-frame one
# (about 35 minutes on 2 cores). Tested as trained: every val key frame with its previous frame.
# Seed 0: NDS 0.305, mAP 0.272, mAVE 2.11 (docs/research/perception_first.md).
#   python tools/sweep.py configs/sweeps/stage1_scenes.py --seeds 0 --only bev_det_pretrain_more-scenes_queue-2_3k
_base_ = ["./bev_det_pretrain_more-scenes_3k.py"]

_pipeline = {{_base_.det_pipeline}}
# the training items of bev_det_pretrain_more-scenes.py, each with its previous frame
_det = dict(type="BEVDriveDataset", pipeline=_pipeline, qa_mode="none", qa_per_sample=8, require_qa=False,
            test_format_repeats=0,
            queue_length=2)
train_dataloader = dict(dataset=dict(
    _delete_=True, type="ConcatDataset",
    ignore_keys=["data_root", "num_qa_frames", "domain"],
    datasets=[dict(_det, data_root="data/mini_world/", ann_file="infos/bevlm_infos_train.pkl"),
              dict(_det, data_root="data/mini_world_extra/", ann_file="infos/bevlm_infos_train.pkl"),
              dict(_det, data_root="data/mini_world_extra/", ann_file="infos/bevlm_infos_val.pkl")]))
test_dataloader = dict(dataset=dict(queue_length=2))
model = dict(det_head=dict(code_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)))
