# The combined recipe (configs/ablations/bev_vlm_300it_det-more-scenes.py: 300 stage-2 iterations from
# the 135-scene, 3000-iteration detector) started instead from that detector trained with a 2-frame
# temporal queue (configs/ablations/bev_det_pretrain_more-scenes_queue-2_3k.py, seed 0: NDS 0.305 /
# mAVE 2.11 against 0.290 / 2.44 single-frame). Stage 2 trains with a 2-frame queue and is tested
# streaming every val frame, so this detector's temporal self-attention has already learned to use
# the previous BEV. Run that stage 1 first:
#   python tools/sweep.py configs/sweeps/stage1_scenes.py --seeds 0 --only bev_det_pretrain_more-scenes_queue-2_3k
#   python tools/sweep.py configs/sweeps/det_scenes.py --seeds 0 --only bev_vlm_300it_det-more-scenes-queue-2
# Stage-2 seeds 0 and 1 (both from this detector's seed 0): GPT-free 0.306 / 0.301, against 0.301 / 0.298
# from the single-frame detector, +0.004 [-0.012, +0.019] pooled, not separated
# (docs/results/combined_recipe/queue2_detector_vs_combined_seeds01.md).
_base_ = ["./bev_vlm_300it_det-more-scenes.py"]
load_from = "work_dirs/sweeps/stage1_scenes/bev_det_pretrain_more-scenes_queue-2_3k/seed0/iter_3000.pth"
