"""Compare detectors on the nuScenes detection scores with a paired bootstrap over scenes and frames.

``python tools/compare_det.py --ref DIR [DIR ...] --run DIR [DIR ...] [--resamples N] [--out table.md]``
``python tools/compare_det.py --matches-from CONFIG DIR [DIR ...]``

Each DIR is a detector's test folder (``tools/test.py`` of a config whose evaluator is
``NuScenesDetMetric``: ``det_matches.npz`` beside ``metrics.json``) or a work dir whose ``test/``
holds it. ``--ref`` lists the reference runs (e.g. its seeds), ``--run`` the compared ones, all
scored on the same val frames. NDS, mAP, the five TP errors and each class's AP are recomputed
on the same resamples for every run (scenes drawn with replacement, then frames within each
drawn scene); the table gives each group's mean over its runs on all frames (± the standard
deviation over the runs), the difference ``run - ref`` with its 95 % percentile interval, and
``*`` where that interval excludes zero (:mod:`bevlm.evaluation.det_bootstrap`).

``--matches-from CONFIG`` writes ``det_matches.npz`` into each DIR from its ``results_nusc.json``
(test folders of before the metric wrote the matches), with the evaluator settings of CONFIG.

``python tools/compare_det.py --zero-velocity CONFIG DIR OUT`` writes the zero-velocity reference
of the run in DIR into OUT: the same boxes standing still (``results_nusc.json``, its
``det_matches.npz`` and ``metrics_summary.json``), and prints its scores beside the run's. Compare
``--ref OUT --run DIR`` to see what the velocity branch adds, with an interval (the two share
every match, so mAP and the other TP errors differ by exactly zero).
"""
import argparse
import json
import os
import sys


def _folder(path: str) -> str:
    if os.path.isdir(os.path.join(path, "test")) and not os.path.isfile(os.path.join(path, "det_matches.npz")):
        return os.path.join(path, "test")
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", nargs="+", help="reference run folders (pooled: their mean)")
    p.add_argument("--run", nargs="+", help="compared run folders (pooled: their mean)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="resampling seed (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the interval (default 0.05)")
    p.add_argument("--out", help="also write the table to this Markdown file (and the numbers to .json)")
    p.add_argument("--zero-velocity", nargs=3, metavar=("CONFIG", "DIR", "OUT"),
                   help="write the zero-velocity reference of the run in DIR into the folder OUT (CONFIG: the "
                        "detection config whose test_evaluator scored it)")
    p.add_argument("--matches-from", nargs="+", metavar=("CONFIG", "DIR"),
                   help="write det_matches.npz into each DIR from its results_nusc.json (CONFIG: the "
                        "detection config whose test_evaluator scored it)")
    return p.parse_args(argv)


def _det_evaluation(config_path: str):
    """``(DetectionConfig, NuScenes)`` of CONFIG's NuScenesDetMetric."""
    from mmengine.config import Config
    from nuscenes.nuscenes import NuScenes

    from bevlm.evaluation.nuscenes_det_metric import build_detection_config

    cfg = Config.fromfile(config_path)
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    ev = next((e for e in evaluators if e.get("type") == "NuScenesDetMetric"), None)
    if ev is None:
        raise SystemExit(f"{config_path}: test_evaluator has no NuScenesDetMetric; pass the detection config "
                         "that scored the runs (e.g. configs/bev_det_pretrain.py)")
    config = build_detection_config(ev.get("eval_config", "detection_cvpr_2019"), ev.get("class_range"),
                                    ev.get("class_names"))
    nusc = NuScenes(version=ev.get("version", "v1.0-trainval"), dataroot=ev["data_root"], verbose=False)
    return config, nusc


def _results_path(d: str, flag: str) -> str:
    path = os.path.join(_folder(d), "results_nusc.json")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found; {flag} needs the run's results_nusc.json "
                         "(tools/test.py writes it into the test folder)")
    return path


def write_matches(config_path: str, dirs: list[str]) -> None:
    """``det_matches.npz`` of each folder's ``results_nusc.json`` under CONFIG's NuScenesDetMetric."""
    from bevlm.evaluation.det_bootstrap import MATCHES_FILE, matches_of_results

    config, nusc = _det_evaluation(config_path)
    for d in dirs:
        path = _results_path(d, "--matches-from")
        d = os.path.dirname(path)
        with open(path, encoding="utf-8") as f:
            tokens = list(json.load(f)["results"])
        matches_of_results(nusc, path, tokens, config).save(os.path.join(d, MATCHES_FILE))
        print(f"{os.path.join(d, MATCHES_FILE)}: {len(tokens)} frames", flush=True)


def write_zero_velocity(config_path: str, run_dir: str, out_dir: str) -> dict:
    """The zero-velocity reference of a run (:func:`~bevlm.evaluation.nuscenes_det_metric.zero_velocity_results`)
    scored by CONFIG's evaluator into ``out_dir``; returns ``{"run": scores, "zero_velocity": scores}``."""
    from bevlm.evaluation.det_bootstrap import MATCHES_FILE, DetectionMatches, score_matches
    from bevlm.evaluation.nuscenes_det_metric import evaluate_nusc_results, zero_velocity_results
    from bevlm.utils import atomic_write_json

    path = _results_path(run_dir, "--zero-velocity")
    if os.path.abspath(out_dir) == os.path.abspath(os.path.dirname(path)):
        raise SystemExit(f"--zero-velocity: OUT {out_dir} is the run's own folder; give a new folder so the "
                         "run's results are kept")
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    config, nusc = _det_evaluation(config_path)
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(out_dir, "results_nusc.json")
    atomic_write_json(zero_velocity_results(results), out_path)
    evaluate_nusc_results(nusc, out_path, list(results["results"]), config, out_dir,
                          os.path.join(out_dir, MATCHES_FILE))
    scores = {"zero_velocity": score_matches(DetectionMatches.load(out_dir))}
    run_matches = os.path.join(os.path.dirname(path), MATCHES_FILE)
    if os.path.isfile(run_matches):
        scores["run"] = score_matches(DetectionMatches.load(os.path.dirname(path)))
    return scores


def format_table(res: dict, ref_name: str, run_name: str) -> list[str]:
    """Markdown rows: metric, reference, run, difference [interval]."""
    import numpy as np

    def cell(each):
        return f"{np.mean(each):.3f}" + (f" ± {np.std(each, ddof=1):.3f}" if len(each) > 1 else "")

    lines = [f"| metric | {ref_name} | {run_name} | {run_name} - {ref_name} [95 % CI] |", "|---|---|---|---|"]
    for k, r in res.items():
        star = " \\*" if r["significant"] else ""
        lines.append(f"| {k} | {cell(r['ref_each'])} | {cell(r['run_each'])} | "
                     f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]{star} |")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.zero_velocity:
        scores = write_zero_velocity(*args.zero_velocity)
        names = [k for k in ("run", "zero_velocity") if k in scores]
        print("| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
        for k in scores["zero_velocity"]:
            print(f"| {k} | " + " | ".join(f"{scores[n][k]:.3f}" for n in names) + " |")
        return 0
    if args.matches_from:
        if len(args.matches_from) < 2:
            print("compare_det: --matches-from needs CONFIG and at least one DIR", file=sys.stderr)
            return 2
        write_matches(args.matches_from[0], args.matches_from[1:])
        return 0
    if not args.ref or not args.run:
        print("compare_det: give --ref DIR [DIR ...] and --run DIR [DIR ...] (or --matches-from)", file=sys.stderr)
        return 2
    from bevlm.evaluation.det_bootstrap import DetectionMatches, paired_det_bootstrap
    from bevlm.utils import atomic_write_json

    try:
        refs = [DetectionMatches.load(_folder(d)) for d in args.ref]
        runs = [DetectionMatches.load(_folder(d)) for d in args.run]
        res = paired_det_bootstrap(refs, runs, args.resamples, args.seed, args.alpha, names=(args.ref, args.run))
    except (FileNotFoundError, ValueError) as e:
        print(f"compare_det: {e}", file=sys.stderr)
        return 2
    ref_name = f"ref ({len(refs)} run{'s' if len(refs) > 1 else ''})"
    run_name = f"run ({len(runs)} run{'s' if len(runs) > 1 else ''})"
    head = (f"Paired two-stage cluster bootstrap ({len(set(refs[0].scenes.tolist()))} scenes, {len(refs[0].tokens)} "
            f"frames, {args.resamples} resamples, seed {args.seed}); ref: {' '.join(args.ref)}; run: {' '.join(args.run)}")
    lines = [head, "", *format_table(res, ref_name, run_name)]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        atomic_write_json({"ref": args.ref, "run": args.run, "resamples": args.resamples, "seed": args.seed,
                           "results": res}, os.path.splitext(args.out)[0] + ".json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
