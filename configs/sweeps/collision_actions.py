# The collision-action questions trained more often (configs/ablations/bev_vlm_collision-repeats.py)
# against the default, at equal iterations; read the family row (`tools/compare.py --by-family`,
# drivelm/exact_match/collision_actions) beside the overall exact match and GPT-free.
sweep = dict(
    name="collision_actions",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_collision-repeats.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy", "planning/L2_avg_stp3", "efficiency/frame_s"],
)
