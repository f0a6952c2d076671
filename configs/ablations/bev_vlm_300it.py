# The default stage 2 (configs/bev_vlm.py) trained for 300 iterations instead of 100, with the same
# warm-up share and cosine decay: is the default bound by its CPU budget (the main job must fit in
# 30 minutes on 2 cores)? 300 iterations is also the total of the three-domain runs of
# configs/multi_domain/*_300it.py, so their day frames can be compared with a day-only model of the
# same total steps (docs/research/schedule.md). Three times the default's training time (~35 min).
_base_ = ["../bev_vlm.py"]
train_cfg = dict(max_iters=300)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=300, eta_min_ratio=0.05),
]
