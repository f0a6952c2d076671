# Moving status from the BEV. Every model of the default family answers DriveLM's moving-status
# question the same way (39 of 48 right): "Going ahead" when it is an option, else "Stopped"; the
# options decide, not the images. Two steps toward a signal from the BEV, at equal LLM and schedule:
# a longer stage 1 trained with a 2-frame queue (its detector can read velocity), and the detections line
# with a moving / stopped word per object from that velocity (docs/research/motion.md).
sweep = dict(
    name="motion",
    # the default first: the reference of the summary's paired differences
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_det-q2-3k.py",
             "configs/ablations/bev_vlm_det-motion.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/moving_status",
             "drivelm/language_score", "drivelm/match_f1", "drivelm/full_accuracy",
             "planning/L2_avg_stp3", "efficiency/prefix_tokens", "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
