# Trajectory-token head vs decoded text waypoints, with and without the ego-status token; and the
# token head in the prefix (default) vs after the perception and prediction answers (traj-after-qa).
sweep = dict(
    name="trajectory",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_traj-text.py",
             "configs/ablations/bev_vlm_no-ego.py", "configs/ablations/bev_vlm_traj-text_no-ego.py",
             "configs/ablations/bev_vlm_traj-after-qa.py"],
    steps=["train", "test"],
    test_options=["test_dataloader.dataset.frame_stride=4"],
    # tested with the lossless inference variant (prompt cache + batched speculative decoding:
    # answers identical to plain greedy decoding, checked in tests/tools/test_train_test_smoke.py)
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py is the baselines sweep's default run: its training is reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/baselines/bev_vlm"},
    columns=["planning/L2_1s_stp3", "planning/L2_2s_stp3", "planning/L2_3s_stp3", "planning/L2_avg_stp3",
             "planning/collision_avg_stp3", "efficiency/traj_s", "efficiency/traj_tokens_per_frame",
             "drivelm/gpt_free_final"],
    pareto=("efficiency/traj_s", "planning/L2_avg_stp3"),
)
