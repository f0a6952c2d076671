# Both things the default is bound by, together: stage 2 trained for 300 iterations
# (configs/ablations/bev_vlm_300it.py: GPT-free +0.027 *, language +0.022 * over three seeds) and
# started from the better stage-1 detector (configs/ablations/bev_vlm_det-more-scenes.py: 135 scenes,
# 3000 iterations, NDS 0.290; GPT-free +0.022 *, match F1 +9.8 * over three seeds). The recipe for a user with about an hour of
# CPU per seed beyond the main job (the detector: 17-30 minutes, once; this stage 2 and its test: about 53 minutes).
# Three seeds (docs/research/perception_first.md): GPT-free 0.296 ± 0.006 (0.301 / 0.298 / 0.290),
# +0.042 [+0.027, +0.058] * over the default, +0.015 * over 300 iterations alone, +0.020 * over the
# better detector alone; match F1 51.8, language 0.505; the plan unchanged.
# Run the detector first:
#   python tools/sweep.py configs/sweeps/stage1_scenes.py --seeds 0 --only bev_det_pretrain_more-scenes_3k
#   python tools/sweep.py configs/sweeps/det_scenes.py --seeds 0 --only bev_vlm_300it_det-more-scenes
_base_ = ["./bev_vlm_300it.py"]
load_from = "work_dirs/sweeps/stage1_scenes/bev_det_pretrain_more-scenes_3k/seed0/iter_3000.pth"
