# Main recipe: BEV-VLM on the generated mini world, trained on a 2-core CPU.
# Stage 2 of the perception-first recipe: the vision side (backbone, FPN, BEVFormer-lite, aux
# head) starts from the stage-1 detection checkpoint of configs/bev_det_pretrain.py (train it
# first: `python tools/train.py configs/bev_det_pretrain.py`; tools/run_main.sh runs both stages).
_base_ = [
    "_base_/models/bev_vlm.py",
    "_base_/datasets/mini_world.py",
    "_base_/schedules/cpu_short.py",
    "_base_/default_runtime.py",
]

# No validation loop during training: mmengine's IterBasedTrainLoop would also validate at the
# last iteration, which on a CPU costs as much as the training itself. tools/test.py evaluates
# the test split (the val scenes) instead.
val_dataloader = None
val_evaluator = None

# the stage-1 checkpoint (its detection head is not part of this model: a partial load by design)
load_from = "work_dirs/bev_det_pretrain/iter_1000.pth"
# the pretrained vision side trains on at a tenth of the learning rate (a frozen vision side:
# configs/ablations/bev_vlm_frozen-encoder.py; no pretraining: configs/ablations/bev_vlm_no-pretrain.py)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    "img_backbone": dict(lr_mult=0.1),
    "img_neck": dict(lr_mult=0.1),
    "bev_encoder": dict(lr_mult=0.1),
}))
