"""Run an ablation sweep: ``python tools/sweep.py configs/sweeps/<grid>.py [--dry-run] [--results-dir DIR]``.

Expands configs x cfg-options (x seeds, when the sweep sets ``seeds=[...]``) into runs (one work
dir each under work_dirs/sweeps/<name>/, ``<run>/seed<S>/`` per seed), trains and tests each
(skipping finished runs, resuming interrupted ones), and writes results.csv, results.md,
pareto.png and the summary (summary.md / .csv / .json: mean ± std over seeds, and the paired
bootstrap difference to the sweep's first run with its 95 % interval; see
bevlm.engine.sweep). ``--results-dir docs/results`` also writes the summary there as
``<name>.md|.csv|.json`` and keeps a record of every finished run under ``docs/results/runs/<name>/``
(its config as JSON, the test command, the machine, the test files: tens of kilobytes, meant to be
committed). A run whose record matches (config key by key; test command, test data and the
config's model.test_cfg) is restored from it, as is a reused run from the other sweep's record, so a fresh clone re-tables, extends and compares committed
runs without training them again; delete a record to run it anew. ``--records DIR`` keeps records
elsewhere, ``--no-records`` neither reads nor writes them.
"""
import argparse
import os


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_file")
    p.add_argument("--root", default="work_dirs/sweeps")
    p.add_argument("--dry-run", action="store_true", help="only list the runs")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="run only these of the sweep's seeds (e.g. seed 0 of every run first)")
    p.add_argument("--only", nargs="+", metavar="RUN_ID",
                   help="run only these runs (the table still lists every run that has results)")
    p.add_argument("--results-dir", help="also write the summary here as <name>.md/.csv/.json")
    p.add_argument("--records", help="run-records folder (default: <results-dir>/runs with --results-dir)")
    p.add_argument("--no-records", action="store_true", help="neither restore runs from records nor write them")
    args = p.parse_args()
    from mmengine.config import Config

    from bevlm.engine.sweep import run_sweep

    records = None if args.no_records else (
        args.records or (os.path.join(args.results_dir, "runs") if args.results_dir else None))
    run_sweep(Config.fromfile(args.sweep_file).sweep.to_dict(), root=args.root, dry_run=args.dry_run,
              only=args.only, results_dir=args.results_dir, only_seeds=args.seeds, records=records)


if __name__ == "__main__":
    main()
