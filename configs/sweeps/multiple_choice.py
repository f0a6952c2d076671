# Multiple-choice answers by option likelihood (the default) against the decoded letter
# (configs/ablations/bev_vlm_mc-generate.py) and against the likelihood calibrated by a content-free
# frame (configs/ablations/bev_vlm_mc-calibrated.py), on the same trainings: the three entries reuse the trajectory
# sweep's trainings of the default (checked key by key; model.test_cfg is a test-time setting), so each
# seed costs one extra test, and the comparison is paired on the same checkpoints.
sweep = dict(
    name="multiple_choice",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_mc-generate.py",
             "configs/ablations/bev_vlm_mc-calibrated.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm",
           "bev_vlm_mc-generate": "work_dirs/sweeps/recipe_r3/bev_vlm",
           "bev_vlm_mc-calibrated": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/full_accuracy", "drivelm/language_score",
             "drivelm/match_f1", "efficiency/frame_s"],
)
