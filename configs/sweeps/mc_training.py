# Multiple-choice questions in training: as their free-form answers (the default since 2026-12-05) or as
# the test asks them (option list + letter, configs/ablations/bev_vlm_letter-mc-train.py), both tested
# the default way (options scored by likelihood). Paired over seeds on the default split; the default's
# trainings are the recipe sweep's (reused, checked key by key). The same study on the previous default:
# docs/results/world36_r1-default/.
sweep = dict(
    name="mc_training",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_letter-mc-train.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior",
             "drivelm/family/moving_status", "drivelm/full_accuracy", "drivelm/language_score",
             "drivelm/match_f1", "planning/L2_avg_stp3"],
)
