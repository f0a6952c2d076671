"""Score an official-format DriveLM prediction file offline.

    python tools/eval_drivelm.py --pred output.json --test test_eval.json [--json out.json]
    python tools/eval_drivelm.py --gt v1_1_train_sample.json --seed 0 --write-test test_eval.json
    python tools/eval_drivelm.py ... --judge-url https://api.openai.com/v1 [--judge-model gpt-3.5-turbo]
    python tools/eval_drivelm.py --pred A.json --test test_eval.json --family-from B.json important_objects \
        [--only-without "<c"]   # A's score with B's answers to one question family (a diagnostic)
    python tools/eval_drivelm.py --pred A.json [B.json ...] --test test_eval.json --families
        # exact match per question family, one column per prediction file

Every non-GPT term equals the official ``challenge/evaluation.py``; the GPT terms are computed
only with ``--judge-url`` (otherwise reported absent, and ``final`` is not printed as a number).
"""
from __future__ import annotations

import argparse
import sys

from bevlm.evaluation import (OpenAIJudge, atomic_write_json, build_test_eval, evaluate, iter_official_ids,
                              load_predictions, load_test_eval, splice_family, write_test_eval)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DriveLM challenge score (offline, official non-GPT terms)")
    p.add_argument("--pred", nargs="+", help="output.json (list of {id, question, answer}) or submission.json "
                                             "(several only with --families)")
    p.add_argument("--test", help="test_eval.json (QA with tags, MC questions converted)")
    p.add_argument("--gt", help="build the test set from a DriveLM v1.1 GT file instead of --test")
    p.add_argument("--seed", type=int, default=0, help="seed of the MC options when using --gt")
    p.add_argument("--write-test", help="write the test set built from --gt to this path")
    p.add_argument("--json", help="write the full report (scores, counts, per-item detail) here")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint for the GPT terms")
    p.add_argument("--judge-model", default="gpt-3.5-turbo")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="env var holding the judge key")
    p.add_argument("--family-from", nargs=2, metavar=("PRED", "FAMILY"),
                   help="score --pred with its answers to one question family taken from PRED (same test file): "
                        "how much of a difference between two runs that family carries")
    p.add_argument("--only-without", metavar="TEXT",
                   help="with --family-from: replace only the answers that do not contain TEXT (e.g. '<c')")
    p.add_argument("--families", action="store_true",
                   help="print the exact match of each --pred file per question family (with how many reference "
                        "answers hold c-tag pixel coordinates) instead of the challenge score")
    p.add_argument("--strict", action="store_true",
                   help="refuse prediction ids that are not in the test set (default: warn and ignore them)")
    args = p.parse_args(argv)
    if bool(args.test) == bool(args.gt):
        p.error("give exactly one of --test (test_eval.json) or --gt (DriveLM v1.1 GT file)")
    if not args.pred and not args.write_test:
        p.error("--pred is required (unless only --write-test is wanted)")
    if args.only_without is not None and not args.family_from:
        p.error("--only-without needs --family-from")
    if args.pred and len(args.pred) > 1 and not args.families:
        p.error("several --pred files only with --families")
    return args


def format_families(names: list[str], tables: list[dict]) -> str:
    """Markdown table: family, questions, reference answers with a c-tag, then each run's exact match
    with, in brackets, how many different answers it gave to the family's questions."""
    lines = ["| family | questions | answers with a c-tag | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for family, row in tables[0].items():
        cells = [f"{t[family]['exact'] / t[family]['questions']:.3f} ({t[family]['distinct']})" if family in t
                 else "-" for t in tables]
        lines.append(f"| {family} | {row['questions']} | {row['with_ctag']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unknown_prediction_ids(pred: dict, test: dict) -> list[str]:
    """Prediction ids that the test set does not hold (sorted)."""
    known = {qid for qid, _ in iter_official_ids(test)}
    return sorted(set(pred) - known)


def _fmt(value) -> str:
    if value is None:
        return "absent"
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def format_report(report: dict) -> str:
    """A readable table of the scores, counts and missing GPT weight."""
    rows = [("accuracy (tag 0, raw equality)", report["accuracy"])]
    for key, value in (report["language"] or {}).items():
        rows.append((f"  {key}", value))
    rows += [("language L (tag 2)", report["language_score"]),
             ("match F1 x100 (tag 3)", report["match_f1"]),
             ("chatgpt (tag 1)", report["chatgpt"]),
             ("match = (F1 + GPT)/2", report["match"]),
             ("GPT-free final = 0.2L + 0.2acc + 0.1F1/100", report["gpt_free_final"]),
             ("missing GPT weight", report["missing_gpt_weight"]),
             ("final (official)", report["final"])]
    width = max(len(name) for name, _ in rows) + 2
    lines = ["DriveLM challenge score", "-" * (width + 14)]
    lines += [f"{name:<{width}}{_fmt(value):>14}" for name, value in rows]
    lines += ["", f"{'tag':<8}{'kept':>8}{'skipped':>10}"]
    for tag, c in report["counts"].items():
        lines.append(f"{tag:<8}{c['kept']:>8}{c['skipped']:>10}")
    if report["absent"]:
        lines.append(f"\nabsent terms: {', '.join(report['absent'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.gt:
        from bevlm.datasets.drivelm_io import load_drivelm
        test = build_test_eval(load_drivelm(args.gt), seed=args.seed, source=args.gt)
        if args.write_test:
            write_test_eval(test, args.write_test)
            print(f"wrote {args.write_test}")
    else:
        test = load_test_eval(args.test)
    if not args.pred:
        return 0
    if args.families:
        from bevlm.evaluation import family_exact_match
        print(format_families(args.pred, [family_exact_match(load_predictions(p), test) for p in args.pred]))
        return 0
    args.pred = args.pred[0]
    judge = OpenAIJudge(args.judge_url, args.judge_model, args.judge_key_env) if args.judge_url else None
    pred = load_predictions(args.pred)
    extra = unknown_prediction_ids(pred, test)
    if extra:
        shown = ", ".join(extra[:5]) + (f", ... ({len(extra) - 5} more)" if len(extra) > 5 else "")
        message = (f"{args.pred}: {len(extra)} prediction id(s) are not in the test set and are not scored: "
                   f"{shown}. Fix: predict with the same test file, or check the id format "
                   f"f'{{scene}}_{{frame}}_{{i}}'")
        if args.strict:
            print(f"error: {message}", file=sys.stderr)
            return 2
        print(f"warning: {message}", file=sys.stderr)
    if args.family_from:
        other_path, family = args.family_from
        pred, replaced = splice_family(pred, load_predictions(other_path), test, family, args.only_without,
                                       source=other_path)
        print(f"{replaced} {family} answer(s) taken from {other_path}")
    report = evaluate(pred, test, gpt_judge=judge, source=args.pred)
    print(format_report(report))
    if args.json:
        atomic_write_json(report, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
