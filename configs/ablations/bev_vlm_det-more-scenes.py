# The default stage 2 started from the stage-1 detector trained on five times the scenes
# (configs/ablations/bev_det_pretrain_more-scenes.py: the default world's 27 training scenes plus the
# 108 of data/mini_world_extra, 1000 iterations, seed 0 of configs/sweeps/stage1_scenes.py) instead of
# configs/bev_det_pretrain.py. Stage 2 itself trains on the default world only, as the default does;
# the detections line comes from the better detector. Run that stage 1 first:
#   python tools/sweep.py configs/sweeps/stage1_scenes.py --seeds 0 --only bev_det_pretrain_more-scenes
_base_ = ["../bev_vlm.py"]
load_from = "work_dirs/sweeps/stage1_scenes/bev_det_pretrain_more-scenes/seed0/iter_1000.pth"
