# BEV vs. blind vs. CLIP-style camera tokens at equal LLM, budget and schedule (docs/research/baselines.md).
sweep = dict(
    name="baselines",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_blind.py",
             "configs/ablations/bev_vlm_camera.py"],
    steps=["train", "test"],
    # evaluate on every 4th val frame (12 frames, official test-format questions) to fit a CPU session
    test_options=["test_dataloader.dataset.frame_stride=4"],
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score",
             "drivelm/match_f1", "drivelm/full_accuracy", "planning/L2_avg_stp3",
             "planning/collision_avg_stp3", "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
