# configs/ablations/bev_det_pretrain_more-scenes.py (five times the training scenes) trained for 6000
# iterations, twice the 3000 of configs/ablations/bev_det_pretrain_more-scenes_3k.py, with the same
# warm-up and cosine decay: 12000 frames seen, about 5.6 passes over its 2160 training frames. From
# 1000 to 3000 iterations NDS rose 0.178 -> 0.290 and had not flattened
# (docs/research/perception_first.md): does stage 1 still gain from steps? About 35-55 minutes on 2 cores.
#   python tools/sweep.py configs/sweeps/stage1_scenes.py --seeds 0 --only bev_det_pretrain_more-scenes_6k
# Seed 0 (2026-12-07): NDS 0.348, mAP 0.334, against 0.290 / 0.264 at 3000 iterations: NDS +0.058
# [+0.033, +0.087] * (docs/results/stage1_scenes_6k_vs_3k.md). 53 minutes on a slow day (0.5 s / iteration).
_base_ = ["./bev_det_pretrain_more-scenes.py"]

max_iters = 6000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.05),
]
