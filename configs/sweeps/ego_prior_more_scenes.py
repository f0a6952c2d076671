# The trajectory head's fitted ego-status planner fitted on five times the driving logs
# (configs/ablations/bev_vlm_ego-prior-fit_more-scenes.py: the second generated world's 108 scenes
# added to the fit, info files only) against the default and against the prior fitted on the 27
# training scenes (their seeds are the sweeps recipe_r3's and ego_prior_fit's, reused key by key; all
# trained on the same kind of CPU). Question: does the plan follow its prior below the 0.30 m target?
#   python tools/create_data.py world --out data/mini_world_extra --scenes 108 --seed 5 --domain day
#   python tools/sweep.py configs/sweeps/ego_prior_more_scenes.py --seeds 0 1 --records docs/results/runs
sweep = dict(
    name="ego_prior_more_scenes",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_ego-prior-fit.py",
             "configs/ablations/bev_vlm_ego-prior-fit_more-scenes.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm",
           "bev_vlm_ego-prior-fit": "work_dirs/sweeps/ego_prior_fit/bev_vlm_ego-prior-fit"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior",
             "drivelm/family/safe_actions", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy", "planning/L2_avg_stp3", "planning/collision_avg_stp3",
             "efficiency/frame_s"],
)
