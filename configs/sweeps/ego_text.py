# The ego status as text in the prefix (configs/ablations/bev_vlm_ego-text.py) against the default, at
# equal LLM and schedule. The question: does the behaviour answer (the direction and speed class of the
# ego's next 3 s; most of the official tag-0 accuracy) gain when the LLM reads its speed, acceleration
# and yaw rate as text, and what do the 64 extra prefix tokens cost?
sweep = dict(
    name="ego_text",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_ego-text.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior", "drivelm/full_accuracy",
             "drivelm/language_score", "drivelm/match_f1", "planning/L2_avg_stp3", "efficiency/prefix_tokens",
             "efficiency/prefill_gflops_unshared", "efficiency/frame_s"],
)
