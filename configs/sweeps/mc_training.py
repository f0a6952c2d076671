# Multiple-choice questions in training: as the test asks them (option list + letter, the default) or as
# their free-form answers (configs/ablations/bev_vlm_mc-free-train.py), both tested the default way
# (options scored by likelihood). Paired over seeds on the default split; the default's trainings are
# the trajectory sweep's (reused, checked key by key).
sweep = dict(
    name="mc_training",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_mc-free-train.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/trajectory/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior",
             "drivelm/family/moving_status", "drivelm/full_accuracy", "drivelm/language_score",
             "drivelm/match_f1", "planning/L2_avg_stp3"],
)
