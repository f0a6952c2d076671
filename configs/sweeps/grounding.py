# Grounded questions (configs/ablations/bev_vlm_grounding.py: each c-tag followed by its detected
# position) against the default, at equal iterations; read the family rows (`tools/compare.py
# --by-family`: collision actions, actions based on an object) beside the overall exact match and GPT-free.
sweep = dict(
    name="grounding",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_grounding.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy", "drivelm/family/collision_actions", "planning/L2_avg_stp3",
             "efficiency/frame_s"],
)
