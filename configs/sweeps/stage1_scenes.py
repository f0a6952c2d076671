# Is stage 1 bound by its training scenes? The default stage 1 (27 training scenes) against the same
# detector trained on five times the scenes (configs/ablations/bev_det_pretrain_more-scenes.py: + the
# 108 scenes of a second generated world), both 1000 iterations, 3 seeds each, scored by the nuScenes
# detection metric on the default world's 144 val frames (9 scenes). Needs data/mini_world_extra:
#   python tools/create_data.py world --out data/mini_world_extra --scenes 108 --seed 5 --domain day
#   python tools/sweep.py configs/sweeps/stage1_scenes.py --seeds 0 1 2 --records docs/results/runs
sweep = dict(
    name="stage1_scenes",
    configs=["configs/bev_det_pretrain.py", "configs/ablations/bev_det_pretrain_more-scenes.py",
             # the same at 3000 iterations (seeds 0, 1: NDS 0.290 / 0.315)
             "configs/ablations/bev_det_pretrain_more-scenes_3k.py",
             # and at 6000 iterations (seed 0: NDS 0.348, +0.058 [+0.033, +0.087] * over 3000)
             "configs/ablations/bev_det_pretrain_more-scenes_6k.py",
             # and with a 2-frame queue, velocity weighted as the other box channels (seed 0: NDS 0.305,
             # mAVE 2.11 against 0.290 / 2.44; docs/results/stage1_scenes_queue2_vs_3k.md)
             "configs/ablations/bev_det_pretrain_more-scenes_queue-2_3k.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    # NDS / mAP / TP errors of each run against the default stage 1, seeds paired: a two-stage cluster
    # bootstrap over the 9 val scenes and their frames (bevlm.evaluation.det_bootstrap)
    resamples=2000,
    columns=["nuscenes/NDS", "nuscenes/mAP", "nuscenes/mATE", "nuscenes/mASE", "nuscenes/mAOE", "nuscenes/mAVE",
             "nuscenes/mAAE", "nuscenes/AP_car", "nuscenes/AP_truck", "nuscenes/AP_bus", "nuscenes/AP_pedestrian"],
)
