# What trained draft heads (speculative.draft_heads, fitted to the checkpoint's own answers) add to the
# lossless stack, with and without the training-answer datastore, side by side against the batch-1 fp32
# greedy baseline on the same frames (every variant here answers exactly as the baseline):
#   python tools/train_draft_heads.py configs/bev_vlm.py CKPT      # -> work_dirs/draft_heads/bev_vlm.safetensors
#   python tools/benchmark.py configs/bev_vlm.py CKPT --bench configs/benchmarks/draft_heads.py \
#       --stride 36 --memory-frames 0 --out-dir work_dirs/benchmark_draft_heads
_base_ = ["./default.py"]
selection = [
    "baseline",                          # batch-1 greedy, fp32, one question at a time
    "lossless",                          # prompt cache + batched drafts: lookup (line, other answers) + datastore
    "lossless_heads",                    # ... + the heads where lookup and the datastore have nothing or
                                         #     depart from the heads' guesses (head_policy='override')
    "lossless_heads_p50",                # ... the same, guesses drafted while their probability >= 0.5
    "lossless_lookup_only",              # no training answers: lookup over questions, line, other answers
    "lossless_lookup_only_heads",        # ... + the heads where lookup has nothing (head_policy='fallback')
]
