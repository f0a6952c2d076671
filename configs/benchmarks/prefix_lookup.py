# What prompt lookup over the detections line (the prefix's text, PrefixCache.lookup_ids) and over the
# other questions' answers of the batch buys the lossless stack, with and without the training-answer
# datastore, side by side against the batch-1 fp32 greedy baseline on the same frames (every variant
# here answers exactly as the baseline):
#   python tools/benchmark.py configs/bev_vlm.py CKPT --bench configs/benchmarks/prefix_lookup.py \
#       --stride 36 --memory-frames 0 --out-dir work_dirs/benchmark_prefix_lookup
_base_ = ["./default.py"]
selection = [
    "baseline",                          # batch-1 greedy, fp32, one question at a time
    "lossless",                          # prompt cache + batched drafts: lookup (line, other answers) + datastore
    "lossless_no_prefix",                # ... without the detections line
    "lossless_no_others",                # ... without the other answers
    "lossless_plain",                    # ... without both: the stack before 2026-12-05
    "lossless_lookup_only",              # no training answers: lookup over questions, line, other answers
    "lossless_lookup_only_plain",        # ... over the questions only
]
