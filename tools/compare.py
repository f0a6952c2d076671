"""Compare test runs to a reference with a paired bootstrap: which differences are more than luck.

``python tools/compare.py REF_RUN_DIR RUN_DIR [RUN_DIR ...] [--resamples N] [--seed S] [--out table.md]``

Each RUN_DIR is a ``tools/test.py --out-dir`` (``drivelm.output.json``, ``drivelm.test_eval.json``,
``per_frame.json``) or a work dir whose ``test/`` holds them. All runs must have been scored on the
same frames and questions. For each run, every metric (DriveLM: GPT-free score, accuracy,
language score and BLEU / ROUGE-L / CIDEr at corpus level, match F1, test exact match; planning
L2 / collision; efficiency) is recomputed on the same resamples of the frames as the reference's
(scenes drawn with replacement, then frames within each drawn scene); the table gives the
difference to the reference with its percentile interval and marks with ``*`` the differences
whose interval excludes zero (see :mod:`bevlm.evaluation.bootstrap`).
"""
import argparse
import os.path as osp
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", help="reference run folder")
    p.add_argument("runs", nargs="+", help="run folders to compare with the reference")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="resampling seed (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the interval (default 0.05)")
    p.add_argument("--metrics", nargs="+", help="only these metrics (names as in metrics.json)")
    p.add_argument("--out", help="also write the tables to this Markdown file (and the numbers to "
                                 "the same name with .json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from bevlm.evaluation.bootstrap import PairedBootstrap, format_comparison
    from bevlm.evaluation.drivelm_files import atomic_write_json
    from bevlm.evaluation.drivelm_testset import DriveLMEvalError

    try:
        pb = PairedBootstrap([args.ref, *args.runs])
    except (DriveLMEvalError, FileNotFoundError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    lines, results = [], {}
    for i, run in enumerate(args.runs, 1):
        res = pb.compare(0, i, resamples=args.resamples, seed=args.seed, alpha=args.alpha)
        results[run] = res
        lines += format_comparison(res, "ref", osp.basename(osp.normpath(run)) or run, args.metrics) + [""]
    header = [f"Reference (ref): {args.ref}", ""]
    text = "\n".join(header + lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        atomic_write_json({"ref": args.ref, "results": results}, osp.splitext(args.out)[0] + ".json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
