"""Run an ablation sweep: ``python tools/sweep.py configs/sweeps/<grid>.py [--dry-run]``.

Expands configs x cfg-options into runs (one work dir each under work_dirs/sweeps/<name>/), trains
and tests each (skipping finished runs, resuming interrupted ones), and writes results.csv,
results.md and pareto.png.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), "..", "projects"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_file")
    p.add_argument("--root", default="work_dirs/sweeps")
    p.add_argument("--dry-run", action="store_true", help="only list the runs")
    p.add_argument("--only", nargs="+", metavar="RUN_ID",
                   help="run only these runs (the table still lists every run that has results)")
    args = p.parse_args()
    from mmengine.config import Config

    from bevlm.engine.sweep import run_sweep

    run_sweep(Config.fromfile(args.sweep_file).sweep.to_dict(), root=args.root, dry_run=args.dry_run,
              only=args.only)


if __name__ == "__main__":
    main()
