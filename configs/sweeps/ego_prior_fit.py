# The trajectory head started from the fitted ego-status planner (configs/ablations/bev_vlm_ego-prior-fit.py:
# command input + a frozen ego_mlp_cmd fit over CTRA) against the default and against the command input
# alone (their seeds are the sweeps recipe_r3's and command_input's, reused key by key; all trained on
# the same kind of CPU). Question: does the plan end below the 0.331 m that fitted planner gets alone,
# towards the 0.30 m target, without costing the answers?
#   python tools/sweep.py configs/sweeps/ego_prior_fit.py --seeds 0 1 --records docs/results/runs
sweep = dict(
    name="ego_prior_fit",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_command-input.py",
             "configs/ablations/bev_vlm_ego-prior-fit.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm",
           "bev_vlm_command-input": "work_dirs/sweeps/command_input/bev_vlm_command-input"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior",
             "drivelm/family/safe_actions", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy", "planning/L2_avg_stp3", "planning/collision_avg_stp3",
             "efficiency/frame_s"],
)
