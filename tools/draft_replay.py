"""Replay a benchmark's batched speculative decoding under other drafting policies (no model forward).

  python tools/draft_replay.py CONFIG CKPT BENCH_DIR/runs/lossless/draft_trace.json [--variant lossless]

``tools/benchmark.py`` writes ``draft_trace.json`` for every batched speculative variant: per frame
the drafts' inputs, the greedy answers and each verify forward's rows, width, cache length and
seconds. This tool rebuilds that variant's drafting (prompt lookup settings, the training-answer
datastore), checks that replaying its own policy reproduces every recorded step, fits a per-step
cost model on the measured forwards, and prints, per policy, the verify steps, fed positions,
drafted / accepted tokens and the modelled verify time (``bevlm.inference.speculative.replay``).
``truncate_to_accepted`` is an oracle (drafts cut to what the verifier accepts): the bound of any
draft-length rule on these drafts. The table goes to ``--out`` (markdown + json).
"""
import argparse
import json
import os


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("trace", help="draft_trace.json of a benchmark run folder")
    p.add_argument("--variant", default="lossless", help="the variant that wrote the trace")
    p.add_argument("--bench", default="configs/benchmarks/default.py", help="file defining `variants`")
    p.add_argument("--max-draft", type=int, nargs="*", default=[4, 8, 12],
                   help="also replay with drafts cut to these lengths")
    p.add_argument("--candidates", type=int, nargs="*", default=[],
                   help="also replay with up to K candidate drafts per row from prompt lookup's other matches, "
                        "each an extra verify row (lookup_alternatives)")
    p.add_argument("--out", help="write OUT.md and OUT.json")
    args = p.parse_args()
    if not os.path.isfile(args.trace):
        raise SystemExit(f"{args.trace}: no such file; run tools/benchmark.py with a batched speculative variant "
                         "(e.g. --variants lossless): it writes runs/<variant>/draft_trace.json")
    with open(args.trace) as f:
        trace = json.load(f)
    if not isinstance(trace, list) or not trace or not all(isinstance(r, dict) and "steps" in r for r in trace):
        raise SystemExit(f"{args.trace}: not a draft trace (a list of frame records with 'steps'); "
                         "use the draft_trace.json that tools/benchmark.py wrote")

    import bevlm.engine  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from bevlm.engine.benchmark import load_model
    from bevlm.inference.speculative.replay import (check_trace, compare_policies, current_policy, fit_step_cost,
                                                    lookup_alternatives, max_draft, truncate_to_accepted)
    from bevlm.inference.variants import build_variant, check_variant, prior_inputs, variant_inputs

    variants = Config.fromfile(args.bench).variants.to_dict()
    if args.variant not in variants:
        raise SystemExit(f"{args.bench}: no variant {args.variant!r}; choose one of {sorted(variants)}")
    spec = variants[args.variant]
    check_variant(spec, args.variant)
    init_default_scope("bevlm")
    cfg = Config.fromfile(args.config)
    base = load_model(cfg, args.checkpoint)
    calib, train_qa = variant_inputs(base, cfg, [spec])
    model = build_variant(base, spec, calib, train_qa=train_qa, prior=prior_inputs(base, cfg, [spec]))
    decoder = model.frame_decoder
    if not getattr(decoder, "batched", False):
        raise SystemExit(f"variant {args.variant!r} does not decode batched speculatively; the trace cannot be replayed")
    bad = check_trace(trace, decoder)
    if bad:
        raise SystemExit("the replay of the variant's own policy differs from the trace (another variant, config or "
                         "checkpoint than the one that recorded it?):\n  " + "\n  ".join(bad[:5]))
    cost = fit_step_cost(trace)
    policies = {"recorded policy": current_policy, "truncate_to_accepted (oracle)": truncate_to_accepted}
    policies.update({f"max_draft({m})": max_draft(m) for m in args.max_draft})
    policies.update({f"lookup_alternatives({k})": lookup_alternatives(k) for k in args.candidates})
    rows = compare_policies(trace, decoder, policies, cost)
    steps = [s for r in trace for s in r["steps"]]
    by_rows = {}
    for s in steps:
        by_rows.setdefault(int(s[0]), [0, 0.0])
        by_rows[int(s[0])][0] += 1
        by_rows[int(s[0])][1] += s[3]
    lines = [f"{len(trace)} frames, {len(steps)} verify forwards, {cost.measured_s:.1f} s measured; replay of the "
             "recorded policy reproduces every step",
             f"step cost fit (R2 {cost.r2:.3f}): {cost.fixed * 1e3:.1f} ms + {cost.per_row * 1e3:.2f} ms x rows + "
             f"{cost.per_position * 1e3:.3f} ms x rows x width + {cost.per_entry * 1e3:.4f} ms x rows x width x "
             "cache entries / 1000",
             "verify forwards by live rows: " + ", ".join(f"{k} rows: {v[0]} ({v[1]:.1f} s)" for k, v in sorted(by_rows.items())),
             "", "| policy | verify forwards | fed positions | drafted | accepted | modelled verify s | vs recorded |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['policy']} | {r['steps']} | {r['positions']} | {r['drafted']} | {r['accepted']} | "
              f"{r['model_s']:.1f} | {r['speedup_vs_first']:.3f}x |" for r in rows]
    print("\n".join(lines))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(dict(cost=cost.__dict__, policies=rows, forwards_by_rows=by_rows), f, indent=2)


if __name__ == "__main__":
    main()
