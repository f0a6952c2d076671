# Stage 1 with a temporal queue of 2 frames (the default stage 1 encodes single frames): the
# BEVFormer-lite's temporal self-attention sees the previous frame's BEV (aligned by the ego motion),
# so the CenterPoint head's velocity branch has motion to read. The previous frame runs without
# gradients (as in the stage-2 model), so an iteration costs about 1.5x the single-frame one.
#   python tools/train.py configs/ablations/bev_det_pretrain_queue-2.py
#   python tools/test.py configs/ablations/bev_det_pretrain_queue-2.py \
#       work_dirs/bev_det_pretrain_queue-2/iter_1000.pth
# Tested as trained: every val key frame with its previous frame (a 2-frame queue).
_base_ = ["../bev_det_pretrain.py"]

train_dataloader = dict(dataset=dict(queue_length=2))
test_dataloader = dict(dataset=dict(queue_length=2))
# (tools/test.py writes the detection results to <work_dir>/test, work_dirs/<config name>/test by default)
