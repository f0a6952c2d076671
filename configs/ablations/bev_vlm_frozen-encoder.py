# Ablation: the stage-1 vision side frozen in stage 2 (no gradients, BatchNorm statistics kept);
# the projector, LoRA, ego / trajectory tokens and the auxiliary BEV head train.
_base_ = ["../bev_vlm.py"]
model = dict(frozen=("img_backbone", "img_neck", "bev_encoder"))
