# Stage 1, longer: a 2-frame queue (configs/ablations/bev_det_pretrain_queue-2.py), 3000 instead of
# 1000 iterations (the 1000-iteration run's training loss was still falling steadily: 4.47 at 100,
# 2.99 at 500, 2.02 at 1000), and the velocity weighted like the other box channels (1.0 instead of
# CenterPoint's 0.2: the moving-status question needs the velocity). About 18 minutes on 2 cores.
#   python tools/train.py configs/ablations/bev_det_pretrain_queue-2_3k.py
#   python tools/test.py configs/ablations/bev_det_pretrain_queue-2_3k.py \
#       work_dirs/bev_det_pretrain_queue-2_3k/iter_3000.pth
_base_ = ["./bev_det_pretrain_queue-2.py"]

max_iters = 3000
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=max_iters, eta_min_ratio=0.05),
]
model = dict(det_head=dict(code_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)))
# (tools/test.py writes the detection results to <work_dir>/test, work_dirs/<config name>/test by default)
