# Real nuScenes + DriveLM (docs/real_data.md): info files of tools/create_data.py nuscenes under
# data/nuscenes/infos (DriveLM train / val split by scene with tools/create_data.py drivelm-split).
data_root = "data/nuscenes/"
# (W, H) network input: half of the 1600x900 camera images; c-tags stay in 1600x900 pixels
img_size = (800, 450)
# T = 4 frames per item in training (the current + 3 previous key frames of the scene); testing
# streams every frame of a scene in time order, so each frame has its whole history
queue_length = 4
train_pipeline = [
    dict(type="LoadMultiViewImages"),
    dict(type="ResizeMultiViewImages", size=img_size),
    dict(type="PackDriveInputs"),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=1,  # per GPU
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(
        type="BEVDriveDataset",
        ann_file="infos/bevlm_infos_train.pkl",
        data_root=data_root,
        pipeline=train_pipeline,
        queue_length=queue_length,
        qa_mode="chunks",
        qa_per_sample=8,
        test_format_repeats=4,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="pseudo_collate"),
    dataset=dict(
        type="BEVDriveDataset",
        ann_file="infos/bevlm_infos_val.pkl",
        data_root=data_root,
        pipeline=test_pipeline,
        queue_length=queue_length,
        qa_mode="frame",
        qa_select="test",
        frame_stride=1,
        # DriveLM annotates a subset of the key frames: the others are streamed as history-only
        # items, so each scored frame's temporal BEV has its whole scene history
        stream_skipped=True,
        test_mode=True,
    ),
)
test_dataloader = val_dataloader
val_evaluator = [dict(type="DriveLMMetric"), dict(type="PlanningMetric"), dict(type="EfficiencyMetric")]
test_evaluator = val_evaluator
