"""Compare test runs to a reference with a paired bootstrap: which differences are more than luck.

``python tools/compare.py REF_RUN_DIR RUN_DIR [RUN_DIR ...] [--resamples N] [--seed S] [--out table.md]``
``python tools/compare.py REF_RUN_DIR DRAW_DIR DRAW_DIR [...] --pooled NAME``
``python tools/compare.py --paired REF_0 RUN_0 REF_1 RUN_1 [...] [--pooled NAME]``
``python tools/compare.py REF_RUN_DIR RUN_DIR --by-family``

Each RUN_DIR is a ``tools/test.py --out-dir`` (``drivelm.output.json``, ``drivelm.test_eval.json``,
``per_frame.json``) or a work dir whose ``test/`` holds them. All runs must have been scored on the
same frames and questions. For each run, every metric (DriveLM: GPT-free score, accuracy,
language score and BLEU / ROUGE-L / CIDEr at corpus level, match F1, test exact match; planning
L2 / collision; efficiency) is recomputed on the same resamples of the frames as the reference's
(scenes drawn with replacement, then frames within each drawn scene); the table gives the
difference to the reference with its percentile interval and marks with ``*`` the differences
whose interval excludes zero (see :mod:`bevlm.evaluation.bootstrap`).

With ``--pooled NAME`` the runs are draws of one variant against one reference (the same model
quantised with other rotation seeds or calibration frames, or trainings with other seeds scored
against one reference): after each draw's own table comes one for their mean, its interval over
the test frames (every resample applied to every draw), with each draw's difference and the
standard deviation over the draws beside it: the spread the frame interval does not cover.

With ``--by-family`` each question family's exact match (``drivelm/exact_match/<family>``, the
families of :mod:`bevlm.structures.qa_families`) gets a row as well (also when ``--metrics`` names
others).

With ``--planning`` only the plans are compared, from each folder's ``per_frame.json`` (the folder,
or its ``test_planning/`` or ``test/``): runs of ``tools/test.py --planning-only`` (every frame of
the test scenes planned, no answers) as well as full test runs; with ``--pooled`` the mean of the
pairs' differences is tabulated too (``bevlm.evaluation.planning_baselines.compare_planning_runs``).

With ``--paired`` the folders are read as (reference, run) pairs, e.g. a baseline and a variant
trained with the same seed, one pair per seed: each run is compared with its own reference, and
``--pooled`` gives the mean of the pairs' differences (as ``tools/sweep.py`` pairs seeds).
"""
import argparse
import os.path as osp
import sys

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", help="reference run folder")
    p.add_argument("runs", nargs="+", help="run folders to compare with the reference")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="resampling seed (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the interval (default 0.05)")
    p.add_argument("--metrics", nargs="+", help="only these metrics (names as in metrics.json)")
    p.add_argument("--paired", action="store_true", help="the folders are (reference, run) pairs: "
                                                          "REF_0 RUN_0 REF_1 RUN_1 ...")
    p.add_argument("--pooled", metavar="NAME", help="the runs are draws of one variant: also tabulate "
                                                     "their mean difference to the reference under NAME")
    p.add_argument("--by-family", action="store_true",
                   help="also compare each question family's exact match (drivelm/exact_match/<family>, "
                        "e.g. safe_actions, collision_actions): where a change of test_exact_match comes from")
    p.add_argument("--planning", action="store_true",
                   help="compare the plans alone (per_frame.json; runs of tools/test.py --planning-only too)")
    p.add_argument("--out", help="also write the tables to this Markdown file (and the numbers to "
                                 "the same name with .json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    folders = [args.ref, *args.runs]
    if args.paired:
        if len(folders) % 2:
            print(f"compare: --paired needs (reference, run) pairs, got {len(folders)} folders; Fix: list "
                  f"REF_0 RUN_0 REF_1 RUN_1 ...", file=sys.stderr)
            return 2
        pairs = [(i, i + 1) for i in range(0, len(folders), 2)]
    else:
        pairs = [(0, i) for i in range(1, len(folders))]
    if args.pooled and len(pairs) < 2:
        print("compare: --pooled needs at least two run folders (the draws); Fix: list every draw's "
              "folder after the reference (with --paired: two pairs or more)", file=sys.stderr)
        return 2
    if args.planning:
        return compare_plans(args, folders, pairs)
    from bevlm.evaluation.bootstrap import PairedBootstrap, format_comparison
    from bevlm.evaluation.drivelm_files import atomic_write_json
    from bevlm.evaluation.drivelm_testset import DriveLMEvalError

    try:
        pb = PairedBootstrap(folders, by_family=args.by_family)
    except (DriveLMEvalError, FileNotFoundError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    if args.by_family and args.metrics:  # the family rows come with the named metrics
        from bevlm.evaluation.bootstrap import FAMILY_EXACT_PREFIX
        args.metrics = [*args.metrics, *(name for name in pb.full_scores(0) if name.startswith(FAMILY_EXACT_PREFIX))]
    lines, results = [], {}
    runs = [folders[j] for _, j in pairs]
    for i, j in pairs:
        res = pb.compare(i, j, resamples=args.resamples, seed=args.seed, alpha=args.alpha)
        results[folders[j]] = res
        ref_name = "ref" if not args.paired else f"ref {folders[i]}"
        lines += format_comparison(res, ref_name, osp.basename(osp.normpath(folders[j])) or folders[j],
                                   args.metrics) + [""]
    if args.pooled:
        res = pb.compare_pooled(pairs, resamples=args.resamples, seed=args.seed, alpha=args.alpha)
        draws = {name: [results[run]["metrics"][name]["diff"] if name in results[run]["metrics"] else None
                        for run in runs] for name in res["metrics"]}
        res["draw_diffs"] = draws
        results[f"pooled:{args.pooled}"] = res
        lines += format_pooled(res, "ref", args.pooled, args.metrics) + [""]
    header = ([f"Pairs (reference, run): {[(folders[i], folders[j]) for i, j in pairs]}", ""] if args.paired
              else [f"Reference (ref): {args.ref}", ""])
    text = "\n".join(header + lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        atomic_write_json({"ref": args.ref if not args.paired else None,
                           "pairs": [[folders[i], folders[j]] for i, j in pairs], "results": results},
                          osp.splitext(args.out)[0] + ".json")
    return 0


def _planning_records(folder: str) -> dict:
    """The ``planning`` section of a run folder's ``per_frame.json`` (the folder, ``test_planning/``, ``test/``)."""
    from bevlm.evaluation.drivelm_files import load_per_frame

    for sub in ("", "test_planning", "test"):
        path = osp.join(folder, sub, "per_frame.json")
        if osp.isfile(path):
            planning = load_per_frame(path).get("planning")
            if not planning:
                raise FileNotFoundError(f"{path}: no planning records. Fix: test a model with a trajectory head")
            return planning
    raise FileNotFoundError(f"{folder}: no per_frame.json here, under test_planning/ or under test/. Fix: pass the "
                            "--out-dir of tools/test.py (--planning-only: <work_dir>/test_planning)")


def compare_plans(args, folders: list[str], pairs: list[tuple[int, int]]) -> int:
    """``--planning``: the plans' metrics of each (reference, run) pair and, with ``--pooled``, their mean."""
    from bevlm.evaluation.bootstrap import format_number
    from bevlm.evaluation.drivelm_files import atomic_write_json
    from bevlm.evaluation.planning_baselines import compare_planning_runs

    try:
        records = {f: _planning_records(f) for f in dict.fromkeys(folders)}
        res = compare_planning_runs([(records[folders[i]], records[folders[j]]) for i, j in pairs],
                                    resamples=args.resamples, seed=args.seed, alpha=args.alpha)
    except (FileNotFoundError, ValueError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    names = [m for m in (args.metrics or list(res["mean"])) if m.split("/")[-1] in res["mean"]]
    lines = [f"Plans of {res['frames']} frames in {res['scenes']} scenes; {res['resamples']} paired two-stage "
             f"cluster bootstrap resamples (seed {args.seed}), {100 * (1 - args.alpha):g} % intervals; * = excludes 0", ""]
    rows = [(f"{folders[i]} -> {folders[j]}", out) for (i, j), out in zip(pairs, res["pairs"])]
    if args.pooled:
        rows.append((f"{args.pooled} (mean of {len(pairs)} pairs)", res["mean"]))
    for name in names:
        key = name.split("/")[-1]
        lines += [f"| {key} | reference | run | difference | 95 % CI | |", "|---|---|---|---|---|---|"]
        for label, out in rows:
            m = out[key]
            lines.append(f"| {label} | {format_number(m['reference'])} | {format_number(m['run'])} | "
                         f"{format_number(m['diff'], True)} | [{format_number(m['lo'], True)}, "
                         f"{format_number(m['hi'], True)}] | {'*' if m['significant'] else ''} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        atomic_write_json({"pairs": [[folders[i], folders[j]] for i, j in pairs], "pooled": args.pooled,
                           "results": res}, osp.splitext(args.out)[0] + ".json")
    return 0


def format_pooled(result: dict, ref_name: str, name: str, metrics: list[str] | None = None) -> list[str]:
    """The pooled table: ``format_comparison``'s columns plus each draw's difference and their std."""
    from bevlm.evaluation.bootstrap import format_comparison, format_number

    names = [m for m in (metrics or list(result["metrics"])) if m in result["metrics"]]
    lines = format_comparison(result, ref_name, f"{name} (mean of {len(result['pairs'])} draws)", names)
    out = lines[:2] + [lines[2] + " per draw | std over draws |", lines[3] + "---|---|"]
    for metric, line in zip(names, lines[4:]):
        diffs = result["draw_diffs"].get(metric, [])
        ok = [d for d in diffs if d is not None]
        std = format_number(float(np.std(ok, ddof=1))) if len(ok) >= 2 else "-"
        per_draw = ", ".join("-" if d is None else format_number(d, True) for d in diffs)
        out.append(f"{line} {per_draw} | {std} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
