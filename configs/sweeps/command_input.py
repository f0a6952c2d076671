# The driving command as an input of the default's trajectory head (configs/ablations/bev_vlm_command-input.py)
# against the default, three seeds, both trained on the same kind of CPU (the default's seeds are the
# sweep recipe_r3's, reused key by key). Question: does the command take the plan towards the 0.30 m
# L2 target on the default recipe, steadily over seeds, and does the plan line written from that plan
# answer the behaviour / safe-action questions better?
#   python tools/sweep.py configs/sweeps/command_input.py --seeds 0 1 2 --records docs/results/runs
sweep = dict(
    name="command_input",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_command-input.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior",
             "drivelm/family/safe_actions", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy", "planning/L2_avg_stp3", "planning/collision_avg_stp3",
             "efficiency/frame_s"],
)
