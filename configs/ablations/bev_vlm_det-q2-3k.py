# The default started from the longer stage 1 (configs/ablations/bev_det_pretrain_queue-2_3k.py:
# a 2-frame queue, so its BEV saw motion, 3000 iterations, velocity weighted like the other box
# channels) instead of configs/bev_det_pretrain.py (single frames, 1000 iterations). Everything
# else, the detections line included, is the default's. Run that stage 1 first:
#   python tools/train.py configs/ablations/bev_det_pretrain_queue-2_3k.py
_base_ = ["../bev_vlm.py"]
load_from = "work_dirs/bev_det_pretrain_queue-2_3k/iter_3000.pth"
