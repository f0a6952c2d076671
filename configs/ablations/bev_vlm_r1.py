# The default recipe until 2026-12-05 ("r1"): the BEV tokens alone in the prefix (no detections as
# text) and the questions the official test asks as multiple choice trained as option list + letter
# (train_dataloader.dataset.mc_seed left at the dataset's 0). Written out in full, not derived from
# configs/bev_vlm.py, so that its runs compare key by key with the run records of that time
# (docs/results/world36_r1-default/); tests/configs/test_configs.py checks that it differs from the
# default in exactly those two settings. The single changes: configs/ablations/bev_vlm_no-det-text.py,
# configs/ablations/bev_vlm_letter-mc-train.py.
_base_ = [
    "../_base_/models/bev_vlm.py",
    "../_base_/datasets/mini_world.py",
    "../_base_/schedules/cpu_short.py",
    "../_base_/default_runtime.py",
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
