# The default started from the stage-1 detector trained with a 2-frame queue
# (configs/ablations/bev_det_pretrain_queue-2.py: its BEV saw motion, so its velocity branch can
# read it) instead of single frames. Everything else, the detections line included, is the
# default's. Run stage 1 first:
#   python tools/train.py configs/ablations/bev_det_pretrain_queue-2.py
_base_ = ["../bev_vlm.py"]
load_from = "work_dirs/bev_det_pretrain_queue-2/iter_1000.pth"
