# The side-by-side table of docs/efficient_inference.md: every efficiency figure of the toolkit
# measured in one run, on the same frames, against the batch-1 fp32 greedy baseline, with paired
# bootstrap intervals over the test scenes and frames. On the whole val split (144 frames) it takes
# hours on 2 CPU cores; --stride K runs every K-th frame.
#   python tools/benchmark.py configs/bev_vlm.py CKPT --bench configs/benchmarks/headline.py \
#       --memory-frames 1 --out-dir work_dirs/benchmark_headline
_base_ = ["./default.py"]
selection = [
    "baseline",                        # batch-1 greedy, fp32, one question at a time
    "prompt_cache",                    # shared prompt text (FLOPs: excluded / amortised / per frame)
    "speculative_chain",               # lossless: lookup + training-answer datastore drafts, batch 1
    "speculative_lookup_n2",           # lossless without the training-answer datastore
    "qdraft_int8_lookup",              # ... + an int8 copy of the weights drafting
    "lossless",                        # prompt cache + batched speculative decoding
    "lossless_bf16",                   # the same with the LLM in bf16 (not lossless)
    "combined_batched",                # lossless + half the visual tokens by occupancy
    # int4 of the trained, merged weights (AWQ + GPTQ after rotating the residual stream and each MLP's
    # inner width; cached kernel) with the lossless stack, and the same codes without resident float copies
    "int4_merged_mixed_awq_rot_mlp_lossless",
    "int4_merged_mixed_awq_rot_mlp_auto",
]
