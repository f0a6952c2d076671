# The full DriveLM QA graph (one round per question) vs the QA graph in at most 3 structured
# rounds (perception -> prediction -> planning + behavior), each trained and tested in its format.
sweep = dict(
    name="qa_rounds",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_three-rounds.py"],
    steps=["train", "test"],
    # the default split (every 3rd val frame scored, all streamed: 48 frames in 9 scenes), 3 trainings per config; the
    # summary pairs each run with the first one (seed-pooled cluster bootstrap, 95 %)
    seeds=[0, 1, 2],
    resamples=2000,
    # tested with the lossless inference variant (same answers as plain greedy decoding)
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py's seeds are the recipe sweep's runs: reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score",
             "drivelm/match_f1", "drivelm/full_accuracy", "efficiency/rounds_per_frame",
             "efficiency/tokens_per_frame", "efficiency/prefill_s", "efficiency/decode_s",
             "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
