# Ablation: no perception pretraining (the vision side starts from random weights, as before the
# two-stage recipe), with the learning rates of that recipe.
_base_ = ["../bev_vlm.py"]
load_from = None
# no stage-1 detector to write detections as text (its head would stay at its random initialisation)
model = dict(det_head=None, perception_text=None)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    "img_backbone": dict(lr_mult=0.5),
    "img_neck": dict(lr_mult=1.0),
    "bev_encoder": dict(lr_mult=1.0),
}))
