"""Kinematic planning references on a config's test split, and test runs compared with them.

``python tools/planning_baselines.py CONFIG [RUN_DIR ...] [--modes constant_velocity ctra ego_mlp ego_mlp_cmd]
[--resamples 2000] [--out result.json]``

Plans each scored test frame from its ego status alone and scores the plan with the planning metric
(ST-P3 / UniAD L2 and collision) on the frames ``tools/test.py CONFIG`` scores: extrapolated by a
kinematic model (constant velocity; constant turn rate and acceleration) or by ``ego_mlp``, a small
MLP from the ego status to offsets over the CTRA plan, fitted on the config's training frames
(its number of steps chosen on held-out training scenes; seconds on a CPU), and ``ego_mlp_cmd``, that MLP
given the driving command too (turn left / right / straight, derived from the future as nuScenes planners
are given it), and ``recorded_future``, the ego's recorded future itself (L2 0; its collision rate is
the floor of the collision metric). ``--rescore`` scores the runs' recorded trajectories again with the
current metric instead of reading their per-frame values; ``--by-command`` also gives each run's L2 and
collision on the frames of each driving command (derived from the recorded future). Each RUN_DIR (a ``tools/test.py`` output folder, a work dir with
``test/``, or a sweep run record) is compared frame by frame from its ``per_frame.json``: run -
reference with a paired two-stage cluster bootstrap interval (scenes, then frames); ``*`` marks an
interval that excludes 0. No model and no checkpoint are needed.

``ego_mlp`` / ``ego_mlp_cmd`` are fitted on the config's training frames plus the frames of
``--extra-ann-files`` (more driving logs: info files, only their ego states and futures read); without
the option, the extra files of the config's ``EgoPriorFitHook`` (what its trajectory head's fitted prior
is fitted on), so ``CONFIG`` = an ablation with more logs gives the reference of its prior.
"""
import argparse
import json
import os.path as osp
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("runs", nargs="*", help="test output folders to compare with the references")
    p.add_argument("--modes", nargs="+", default=["constant_velocity", "ctra", "ego_mlp"],
                   choices=["constant_velocity", "ctra", "ego_mlp", "ego_mlp_cmd", "recorded_future"])
    p.add_argument("--rescore", action="store_true",
                   help="score each run's recorded trajectories again with the current planning metric "
                        "(for runs recorded before a metric change) instead of reading its per-frame values")
    p.add_argument("--by-command", action="store_true",
                   help="also score each run on the frames of each driving command (turn left / right / go "
                        "straight, from the recorded future)")
    p.add_argument("--extra-ann-files", nargs="*", default=None, metavar="INFO_FILE",
                   help="more info files for the ego_mlp fits (default: the config's EgoPriorFitHook's "
                        "extra_ann_files, if any; pass the option alone for none)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. test_dataloader.dataset.data_root=...")
    p.add_argument("--out", help="write the figures to this JSON file")
    return p.parse_args(argv)


def _per_frame(run: str) -> dict:
    for path in (osp.join(run, "per_frame.json"), osp.join(run, "test", "per_frame.json")):
        if osp.isfile(path):
            with open(path) as f:
                return json.load(f)["planning"]
    raise FileNotFoundError(f"{run}: no per_frame.json (here or under test/). Fix: pass a tools/test.py "
                            "--out-dir, a work dir tested by tools/test.py, or a sweep run record")


def _train_frames(cfg) -> list[dict]:
    """The info-file frames the config trains on (each dataset of a concatenation; frames once)."""
    from bevlm.datasets import dataset_frames
    from bevlm.registry import DATASETS

    return dataset_frames(DATASETS.build(cfg.train_dataloader.dataset.to_dict()))


def _extra_ann_files(cfg, given) -> list[str]:
    """``--extra-ann-files`` when given, else those of the config's EgoPriorFitHook (if any)."""
    if given is not None:
        return list(given)
    hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") == "EgoPriorFitHook"]
    return list(hooks[0].get("extra_ann_files", [])) if hooks else []


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope

    import bevlm.datasets  # noqa: F401  (registers the dataset and transforms)
    from bevlm.evaluation.planning_baselines import (compare_planning, fit_ego_mlp, planning_reference,
                                                     summarize_records)
    from bevlm.registry import DATASETS
    from bevlm.structures import scored_samples
    from bevlm.utils import atomic_write_json

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in (o.split("=", 1) for o in args.cfg_options)})
    init_default_scope("bevlm")
    extra_files = _extra_ann_files(cfg, args.extra_ann_files)
    extra = []
    if extra_files and {"ego_mlp", "ego_mlp_cmd"} & set(args.modes):
        from bevlm.engine import extra_fit_frames

        extra = extra_fit_frames(extra_files, cfg)  # checked (no scored scene) before the test set is built
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(stream_skipped=False, queue_length=1)  # the scored frames; no model, no history
    dataset = DATASETS.build(ds_cfg)
    samples = scored_samples(dataset[i]["data_samples"] for i in range(len(dataset)))
    runs = {run: _per_frame(run) for run in args.runs}
    if args.rescore:
        from bevlm.evaluation.planning_baselines import rescore_run

        runs = {run: rescore_run(samples, planning) for run, planning in runs.items()}
        for run, planning in runs.items():
            m = summarize_records([dict(r, mask=r["gt_traj_mask"]) for r in planning.values()])
            print(f"{run} (rescored): L2 avg (ST-P3) {m['L2_avg_stp3']:.3f} m, collision avg "
                  f"{100 * m['collision_avg_stp3']:.2f} %")
    result = {"config": args.config, "frames": len(samples), "references": {}}
    if args.by_command:
        from bevlm.evaluation.planning_baselines import summarize_by_command

        result["by_command"] = {}
        for run, planning in runs.items():
            result["by_command"][run] = summarize_by_command(planning)
            print(f"{run}: " + "; ".join(f"{c} ({m['frames']} frames) L2 {m['L2_avg_stp3']:.3f} m, collision "
                                           f"{100 * m['collision_avg_stp3']:.2f} %"
                                           for c, m in result["by_command"][run].items()))
    train = []
    if {"ego_mlp", "ego_mlp_cmd"} & set(args.modes):  # the training set is built once for both fits
        train = _train_frames(cfg)
        seen = {f["token"] for f in train}
        train = train + [f for f in extra if f["token"] not in seen]
    for mode in args.modes:
        planner, fit = None, None
        if mode in ("ego_mlp", "ego_mlp_cmd"):
            planner = fit_ego_mlp(train, steps=int(samples[0].gt_traj.shape[0]), seed=args.seed,
                                  command=mode == "ego_mlp_cmd")
            fit = {"train_frames": len(train), "extra_ann_files": extra_files, "epochs": planner.epochs,
                   "holdout_l2_avg_stp3": planner.holdout_l2}
            print(f"{mode}: fitted on {len(train)} training frames{' (with extra_ann_files)' if extra else ''}, "
                  f"{planner.epochs} steps (held-out scenes: "
                  f"L2 {planner.holdout_l2[mode]:.3f} m vs CTRA {planner.holdout_l2['ctra']:.3f} m)")
        records = planning_reference(samples, mode, planner)
        entry = {"metrics": summarize_records(records), "runs": {}, **({"fit": fit} if fit else {})}
        print(f"{mode}: L2 avg (ST-P3) {entry['metrics']['L2_avg_stp3']:.3f} m, "
              f"collision avg {100 * entry['metrics']['collision_avg_stp3']:.2f} % on {len(records)} frames")
        for run, planning in runs.items():
            res = compare_planning(records, planning, args.resamples, args.seed)
            entry["runs"][run] = res
            for key in ("L2_avg_stp3", "collision_avg_stp3"):
                m = res["metrics"][key]
                print(f"    {run}: {key} {m['run']:.4f} vs {m['reference']:.4f}: {m['diff']:+.4f} "
                      f"[{m['lo']:+.4f}, {m['hi']:+.4f}]{' *' if m['significant'] else ''} "
                      f"({res['scenes']} scenes, {res['frames']} frames)")
        result["references"][mode] = entry
    if args.out:
        atomic_write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
