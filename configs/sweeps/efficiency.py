# Inference variants of the default model through tools/test.py (one test run per variant, same
# 12 frames), into one accuracy / latency table and Pareto plot. Latencies of separate runs: the
# side-by-side ratios (interleaved per frame in one process) are tools/benchmark.py's.
sweep = dict(
    name="efficiency",
    configs=["configs/bev_vlm.py"],
    variants=["baseline", "batched", "lossless", "lossless_bf16", "prompt_cache_bev_keep50", "combined_batched",
              "combined_bf16", "int4_grid_gptq_lossless", "int4_grid_int8table_lossless"],
    steps=["test"],
    test_options=["test_dataloader.dataset.frame_stride=4"],
    # seed 0 of the default, trained by the recipe sweep (the main job): no training here (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm/seed0"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/full_accuracy",
             "planning/L2_avg_stp3", "efficiency/encoder_gflops", "efficiency/prefill_gflops",
             "efficiency/decode_s", "efficiency/frame_s", "efficiency/tokens_per_frame",
             "efficiency/peak_memory_mb"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
