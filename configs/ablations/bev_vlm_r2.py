# The default recipe from 2026-12-05 to 2026-12-07 ("r2"): configs/bev_vlm.py without the plan line
# (model.plan_text). Written out in full, not derived from configs/bev_vlm.py, so that its runs compare
# key by key with the run records of that time (docs/results/runs/recipe/bev_vlm/);
# tests/configs/test_configs.py checks that it differs from the default in that setting only.
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

# the stage-1 checkpoint: the vision side and the detection head (frozen) that writes the detections
load_from = "work_dirs/bev_det_pretrain/iter_1000.pth"
# the pretrained vision side trains on at a tenth of the learning rate (a frozen vision side:
# configs/ablations/bev_vlm_frozen-encoder.py; no pretraining: configs/ablations/bev_vlm_no-pretrain.py)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    "img_backbone": dict(lr_mult=0.1),
    "img_neck": dict(lr_mult=0.1),
    "bev_encoder": dict(lr_mult=0.1),
}))

# Detections as text in the prefix: the stage-1 CenterPoint head (loaded from the stage-1 checkpoint
# with the rest of the vision side, frozen) decodes the frame's BEV, and the nearest road users are
# written after the visual tokens as "Detected: car 9 m <c1,CAM_FRONT,119.0,106.1>; ..." (128 tokens,
# padded: about 4-5 objects), in the c-tag format of the answers and the stored images' pixel frame
# (bevlm.models.heads.perception_text). Measured against the BEV tokens alone over 3 seeds: match F1
# 18.0 -> 40.8 (docs/research/perception_text.md). Without it: configs/ablations/bev_vlm_no-det-text.py.
model = dict(
    det_head=dict(type="CenterPointHead", embed_dims={{_base_.embed_dims}}, num_classes=10,
                  bev_h={{_base_.bev_h}}, bev_w={{_base_.bev_w}}, pc_range={{_base_.pc_range}},
                  hidden_dims=64, max_num=100, score_threshold=0.05),
    perception_text=dict(score_thr=0.3, max_objects=5, max_range=40.0, num_tokens=128),
)
# The questions the official test format asks as multiple choice are trained on their free-form
# answers (mc_seed=None), not on an option list and a letter: the test scores each option's text by
# its likelihood as the answer (model.test_cfg.multiple_choice='likelihood'), and every behaviour
# question is multiple choice, so letter training never shows the model a behaviour answer. Measured
# over 3 seeds: behaviour 0.34 -> 0.44 (docs/research/multiple_choice.md). Letters:
# configs/ablations/bev_vlm_letter-mc-train.py.
train_dataloader = dict(dataset=dict(mc_seed=None))
