# The headline comparison on the default test split's 48 scored frames (every 3rd val frame of the 9
# val scenes, 384 questions) instead of 4: the variants that carry a figure of the efficient-inference
# page, side by side in one process against the batch-1 fp32 greedy baseline, with paired bootstrap
# intervals over the scenes and their frames. Run on 2 cores of an AMD EPYC (2026-12-06, alone on
# the cores): the memory probes of the 7 variants 15 min (one process each), the two int4 builds
# 6.7 min each, then 100-150 s a frame: 2 h 12 min in all (results: docs/results/benchmark_full_split/,
# docs/efficient_inference.md). --memory-frames 0 saves the 15 minutes.
#   python tools/benchmark.py configs/bev_vlm.py work_dirs/bev_vlm/iter_100.pth \
#       --bench configs/benchmarks/full_split.py --stride 3 --memory-frames 1 --resamples 2000 \
#       --out-dir work_dirs/benchmark_full_split
_base_ = ["./default.py"]
selection = [
    "baseline",                                 # batch-1 greedy, fp32, one question at a time
    "lossless",                                 # prompt cache + batched speculative decoding
    "lossless_lookup_only",                     # ... without the training-answer datastore
    "lossless_bf16",                            # the same with the LLM in bf16 (not lossless)
    "combined_batched_keep33",                  # lossless + a third of the visual tokens by occupancy
    # int4 of the trained, merged weights with the lossless stack, and the same codes without float copies
    "int4_merged_mixed_awq_rot_mlp_lossless",
    "int4_merged_mixed_awq_rot_mlp_auto",
]
