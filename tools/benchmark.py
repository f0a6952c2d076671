"""Benchmark inference variants of a trained model side by side (one process, interleaved).

  python tools/benchmark.py CONFIG CKPT [--variants baseline int4_rtn ...] [--bench configs/benchmarks/default.py]

Prints and saves (``--out-dir``) a table: DriveLM GPT-free score and relative score, planning
L2, per-frame encoder / prefill / decode seconds, decode tokens/s and the memory-bandwidth
ceiling and the share of it reached, speedups, encoder+prefill FLOPs ratio (FlopCounterMode; the
shared prompt text excluded, amortised over the frames, and counted on every frame), LLM weight
bytes as stored / resident / streamed per decode step, and with ``--memory-frames N`` each
variant's peak and steady resident memory measured alone in a fresh process.
"""
import argparse


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--bench", default="configs/benchmarks/default.py", help="file defining `variants`")
    p.add_argument("--variants", nargs="+", help="subset of the file's variants (first = baseline; default: the "
                                                 "file's `selection` if it has one, else all)")
    p.add_argument("--frames", type=int, default=None, help="max QA frames of the test split")
    p.add_argument("--stride", type=int, default=1, help="use every k-th frame")
    p.add_argument("--qa-select", choices=["test", "all"], default="test")
    p.add_argument("--out-dir", default="work_dirs/benchmark")
    p.add_argument("--resamples", type=int, default=1000,
                   help="paired bootstrap resamples for the intervals of the speed-up and relative scores")
    p.add_argument("--memory-only", action="store_true",
                   help="only the per-variant memory probes (--memory-frames), written to OUT_DIR/memory.json")
    p.add_argument("--memory-frames", type=int, default=0,
                   help="also run each variant alone in a fresh process on this many frames and report its "
                        "resident memory (peak / steady RSS); 0 = skip")
    args = p.parse_args()
    import bevlm.engine  # noqa: F401
    from mmengine.config import Config

    from bevlm.engine.benchmark import run_benchmark

    cfg = Config.fromfile(args.config)
    bench = Config.fromfile(args.bench)
    variants = bench.variants.to_dict()
    if not args.variants and bench.get("selection"):  # the file's own table (e.g. configs/benchmarks/headline.py)
        args.variants = list(bench.selection)
    if args.variants:
        missing = [v for v in args.variants if v not in variants]
        if missing:
            raise SystemExit(f"{args.bench}: no variants {missing}; available: {list(variants)}")
        variants = {k: variants[k] for k in args.variants}
    if args.memory_only:
        import json
        import os

        from bevlm.engine.benchmark import measure_variant_memory

        if not args.memory_frames:
            raise SystemExit("--memory-only needs --memory-frames N (frames each variant answers alone)")
        out = {}
        for name, spec in variants.items():
            print(f"memory probe: {name}", flush=True)
            out[name] = measure_variant_memory(args.config, args.checkpoint, name, spec, args.memory_frames,
                                               args.qa_select, args.stride)
            print(json.dumps(out[name]), flush=True)
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, "memory.json"), "w") as f:
            json.dump(out, f, indent=2)
        return
    run_benchmark(cfg, args.checkpoint, variants, args.out_dir, max_frames=args.frames,
                  frame_stride=args.stride, qa_select=args.qa_select, memory_frames=args.memory_frames,
                  config_path=args.config, resamples=args.resamples)


if __name__ == "__main__":
    main()
