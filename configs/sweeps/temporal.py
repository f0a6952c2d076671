# Multi-frame input: BEV-level fusion with queues of T = 1, 2, 4, 8 frames, and the image-level
# alternative (4 frames' tokens side by side), at equal LLM and schedule.
sweep = dict(
    name="temporal",
    # the default (T = 2) first: the reference of the summary's paired differences
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_no-temporal.py",
             "configs/ablations/bev_vlm_queue-4.py", "configs/ablations/bev_vlm_queue-8.py",
             "configs/ablations/bev_vlm_frame-tokens-4.py"],
    steps=["train", "test"],
    # the default split (every 3rd val frame scored, all streamed: 48 frames in 9 scenes), 3 trainings per config; the
    # summary pairs each run with the first one (seed-pooled cluster bootstrap, 95 %)
    seeds=[0, 1, 2],
    resamples=2000,
    # tested with the lossless inference variant (prompt cache + batched speculative decoding:
    # answers identical to plain greedy decoding, checked in tests/tools/test_train_test_smoke.py)
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/full_accuracy",
             "drivelm/family/moving_status", "planning/L2_avg_stp3", "planning/collision_avg_stp3",
             "efficiency/encoder_s", "efficiency/frame_s", "efficiency/prefix_tokens"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
