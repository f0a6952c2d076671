# Training length: the default stage 2 (100 iterations, what the main job's 30 minutes allow on 2
# cores) against the same recipe trained for 300 iterations (configs/ablations/bev_vlm_300it.py).
# Tested on the default split (48 scored frames in 9 val scenes, 384 questions, every val frame
# streamed) with the lossless variant; seeds paired, scenes then frames resampled (bevlm.engine.sweep).
# The default's seeds are the recipe sweep's runs (reused, checked key by key).
#   python tools/sweep.py configs/sweeps/schedule.py --seeds 0 1 2 --records docs/results/runs
sweep = dict(
    name="schedule",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_300it.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    # accuracy_ungated: tag-0 accuracy over every tag-0 question, whatever the graph gating keeps
    # gpt_free_ungated: the GPT-free sum with accuracy_ungated (not official)
    columns=["drivelm/gpt_free_final", "drivelm/gpt_free_ungated", "drivelm/accuracy", "drivelm/accuracy_ungated", "drivelm/family/behavior",
             "drivelm/language_score", "drivelm/CIDEr", "drivelm/match_f1", "drivelm/full_accuracy",
             "planning/L2_avg_stp3", "planning/collision_avg_stp3", "efficiency/frame_s"],
)
