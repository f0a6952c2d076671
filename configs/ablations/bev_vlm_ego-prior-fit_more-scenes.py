# bev_vlm_ego-prior-fit.py with the fitted ego-status planner under the trajectory head fitted on five
# times the driving logs: the default world's 27 training scenes plus all 108 scenes of the second
# generated world that ablations/bev_det_pretrain_more-scenes.py trains its detector on (another
# generator seed, the same town model). The fit reads only the info files' ego states and recorded
# futures, no image. Stage 2 itself trains on the default world's frames as before; val stays the
# default world's 9 scenes. Fitted alone (tools/planning_baselines.py on this config, every val frame)
# that planner (ego_mlp_cmd) scores L2 0.268 m against 0.322 m fitted on the 27 scenes. Needs
#   python tools/create_data.py world --out data/mini_world_extra --scenes 108 --seed 5 --domain day
#   python tools/sweep.py configs/sweeps/ego_prior_more_scenes.py --seeds 0 1 --records docs/results/runs
_base_ = ["./bev_vlm_ego-prior-fit.py"]
custom_hooks = [dict(type="EgoPriorFitHook", extra_ann_files=["data/mini_world_extra/infos/bevlm_infos_train.pkl",
                                                              "data/mini_world_extra/infos/bevlm_infos_val.pkl"])]
