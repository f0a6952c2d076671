# Multi-frame input: BEV-level fusion with queues of T = 1, 2, 4, 8 frames, and the image-level
# alternative (4 frames' tokens side by side), at equal LLM and schedule.
sweep = dict(
    name="temporal",
    configs=["configs/ablations/bev_vlm_no-temporal.py", "configs/bev_vlm.py",
             "configs/ablations/bev_vlm_queue-4.py", "configs/ablations/bev_vlm_queue-8.py",
             "configs/ablations/bev_vlm_frame-tokens-4.py"],
    steps=["train", "test"],
    test_options=["test_dataloader.dataset.frame_stride=4"],
    # tested with the lossless inference variant (prompt cache + batched speculative decoding:
    # answers identical to plain greedy decoding, checked in tests/tools/test_train_test_smoke.py)
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py is the baselines sweep's default run: its training is reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/baselines/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/full_accuracy",
             "drivelm/family/moving_status", "planning/L2_avg_stp3", "planning/collision_avg_stp3",
             "efficiency/encoder_s", "efficiency/frame_s", "efficiency/prefix_tokens"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
