# Detections as text in the prefix (the default since 2026-12-05: the stage-1 detection head's nearest road
# users written as c-tags after the visual tokens) against the BEV tokens alone
# (configs/ablations/bev_vlm_no-det-text.py), at equal LLM and schedule. The question: do the key-object
# answers (match F1, tag accuracy) gain from copying the detector's c-tags, and what does the longer
# prefix cost? The same study on the previous default (detections added to it, 3 seeds):
# docs/results/world36_r1-default/.
sweep = dict(
    name="perception_text",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_no-det-text.py"],
    steps=["train", "test"],
    # the default split (every 3rd val frame scored, all streamed: 48 frames in 9 scenes), 3 trainings per
    # config; the summary pairs each run with the first one (seed-pooled cluster bootstrap, 95 %)
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy", "planning/L2_avg_stp3", "efficiency/prefix_tokens",
             "efficiency/prefill_gflops_unshared", "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/match_f1"),
)
