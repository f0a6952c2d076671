# What prompt lookup over the detections line (the prefix's text, PrefixCache.lookup_ids) buys the
# lossless stack, with and without the training-answer datastore, side by side against the batch-1
# fp32 greedy baseline on the same frames (every variant here answers exactly as the baseline):
#   python tools/benchmark.py configs/bev_vlm.py CKPT --bench configs/benchmarks/prefix_lookup.py \
#       --stride 36 --memory-frames 0 --out-dir work_dirs/benchmark_prefix_lookup
_base_ = ["./default.py"]
selection = [
    "baseline",                         # batch-1 greedy, fp32, one question at a time
    "lossless",                         # prompt cache + batched drafts (lookup incl. the line + datastore)
    "lossless_no_prefix_lookup",        # the same without the line
    "lossless_lookup_only",             # no training answers: lookup over the questions and the line
    "lossless_lookup_only_no_prefix",   # ... over the questions only
]
