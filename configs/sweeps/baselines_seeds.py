# The baselines of configs/sweeps/baselines.py (and the camera tokens at CLIP-like counts), each trained with 3 seeds and tested on the default
# split (the official test-format questions of every 3rd val frame, all frames streamed: 48 frames
# in 9 scenes, 384 questions). The summary (summary.md / .csv / .json; `python tools/sweep.py
# configs/sweeps/baselines_seeds.py --results-dir docs/results`) gives each metric's mean ± std
# over the seeds and, against BEV (the first entry), the paired bootstrap difference of the seed
# means with its 95 % interval (scenes, then frames within them, resampled; bevlm.engine.sweep).
sweep = dict(
    name="baselines_seeds",
    # camera-384: per-camera patch tokens at CLIP-like counts (6 x 64), what a CLIP-based VLM prefills
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_blind.py",
             "configs/ablations/bev_vlm_camera.py", "configs/ablations/bev_vlm_camera-384.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    # tested with the lossless inference variant (prompt cache + batched speculative decoding:
    # answers identical to plain greedy decoding), which makes the 48-frame split affordable on a CPU
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/Bleu_1",
             "drivelm/ROUGE_L", "drivelm/CIDEr", "drivelm/match_f1", "drivelm/full_accuracy",
             "planning/L2_avg_stp3", "planning/collision_avg_stp3", "efficiency/prefix_tokens",
             "efficiency/encoder_gflops", "efficiency/prefill_gflops_unshared", "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
