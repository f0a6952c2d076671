# The full DriveLM QA graph (one round per question) vs the QA graph in at most 3 structured
# rounds (perception -> prediction -> planning + behavior), each trained and tested in its format.
sweep = dict(
    name="qa_rounds",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_three-rounds.py"],
    steps=["train", "test"],
    test_options=["test_dataloader.dataset.frame_stride=4"],
    # tested with the lossless inference variant (same answers as plain greedy decoding)
    test_args=["--variant", "lossless"],
    # configs/bev_vlm.py is the baselines sweep's default run: its training is reused (checked key by key)
    reuse={"bev_vlm": "work_dirs/sweeps/baselines/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score",
             "drivelm/match_f1", "drivelm/full_accuracy", "efficiency/rounds_per_frame",
             "efficiency/tokens_per_frame", "efficiency/prefill_s", "efficiency/decode_s",
             "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
