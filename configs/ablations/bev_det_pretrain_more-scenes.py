# Stage 1 with five times the training scenes: the default world's 27 train scenes plus all 108
# scenes of a second generated world (another generator seed, the same town model, camera rig and
# lighting), at the default's 1000 iterations. The 3000-iteration stage 1 fitted its 432 training
# frames without finding more val objects (docs/research/perception_first.md): is stage 1 bound by
# its scenes? Val stays the default world's 9 scenes (144 frames). Needs
#   python tools/create_data.py world --out data/mini_world_extra --scenes 108 --seed 5 --domain day
# (about 4 minutes on 2 cores, 270 MB), then
#   python tools/train.py configs/ablations/bev_det_pretrain_more-scenes.py
#   python tools/test.py configs/ablations/bev_det_pretrain_more-scenes.py \
#       work_dirs/bev_det_pretrain_more-scenes/iter_1000.pth
_base_ = ["../bev_det_pretrain.py"]
_pipeline = {{_base_.det_pipeline}}
# the default stage 1's training items (boxes only, single frames), one dataset per info file
_det = dict(type="BEVDriveDataset", pipeline=_pipeline, qa_mode="none", qa_per_sample=8, require_qa=False,
            test_format_repeats=0,
            queue_length=1)
train_dataloader = dict(dataset=dict(
    _delete_=True, type="ConcatDataset",
    ignore_keys=["data_root", "num_qa_frames", "domain"],
    datasets=[dict(_det, data_root="data/mini_world/", ann_file="infos/bevlm_infos_train.pkl"),
              # the second world has no val role here: both of its splits are training scenes
              dict(_det, data_root="data/mini_world_extra/", ann_file="infos/bevlm_infos_train.pkl"),
              dict(_det, data_root="data/mini_world_extra/", ann_file="infos/bevlm_infos_val.pkl")]))
