"""What the planned trajectory knows of the planning answers, against what the LLM answered (mini world).

``python tools/plan_answer_ceiling.py RUN_DIR [RUN_DIR ...] [--world data/mini_world] [--resamples 2000]
[--out FILE.json]``

For each run (a test directory's parent: ``RUN_DIR/test/per_frame.json`` holds the planned
trajectories, ``drivelm.test_eval.json`` the references, ``drivelm.output.json`` the answers), the
mini world's own answer rules are applied to each scored frame's planned trajectory
(:mod:`bevlm.evaluation.plan_answers`): the behaviour option, the safe-actions text and the ego action
it implies are compared with the references. Beside them: the same reading of the recorded future
(what reading waypoints itself loses), and the run's own exact match on the same questions, with the
difference (plan - answers) over the behaviour and safe-actions questions and its paired two-stage
cluster bootstrap interval (scenes, then frames). Where the plan is right more often than the
answers, the model knows more of these answers than it writes: answers that followed the plan would
score the plan's column.
"""
import argparse
import json
import os


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories with a test/ folder")
    p.add_argument("--world", default="data/mini_world", help="the world the runs were tested on (its world_gt.json)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the difference")
    p.add_argument("--out", help="also write the table (and each frame's scores) as JSON")
    args = p.parse_args()

    from bevlm.evaluation.drivelm_files import load_predictions, load_test_eval
    from bevlm.evaluation.plan_answers import plan_answer_agreement, plan_minus_answers

    gt_path = os.path.join(args.world, "world_gt.json")
    if not os.path.isfile(gt_path):
        raise SystemExit(f"plan_answer_ceiling: {gt_path} not found. Fix: pass --world, the mini world the runs "
                         "were tested on (tools/create_data.py world writes world_gt.json); real DriveLM has none")
    with open(gt_path) as fh:
        world_gt = json.load(fh)
    rows = {}
    for run in args.runs:
        test_dir = os.path.join(run, "test")
        missing = [n for n in ("per_frame.json", "drivelm.test_eval.json", "drivelm.output.json")
                   if not os.path.isfile(os.path.join(test_dir, n))]
        if missing:
            raise SystemExit(f"plan_answer_ceiling: {test_dir} lacks {', '.join(missing)}. Fix: pass run "
                             "directories tested by tools/test.py (or restored from their records)")
        test = load_test_eval(os.path.join(test_dir, "drivelm.test_eval.json"))
        with open(os.path.join(test_dir, "per_frame.json")) as fh:
            planning = json.load(fh)["planning"]
        answers = load_predictions(os.path.join(test_dir, "drivelm.output.json"))
        try:
            plan = plan_answer_agreement({t: r["pred_traj"] for t, r in planning.items()}, world_gt, test, answers)
        except KeyError as err:
            raise SystemExit(f"plan_answer_ceiling: {test_dir}: {err.args[0]} ({gt_path}). Fix: pass --world, the "
                             "world this run was tested on") from None
        recorded = plan_answer_agreement({t: world_gt[t]["ego_future_traj"] for t in planning}, world_gt, test)
        rows[run] = {"plan": plan["totals"], "recorded_future": recorded["totals"],
                     "plan_minus_answers": plan_minus_answers(plan["frames"], resamples=args.resamples),
                     "frames": plan["frames"]}

    def rate(d, key):
        return f"{d[key] / d['questions']:.3f}" if d["questions"] else "-"

    print("Exact match on the behaviour and safe-actions questions: the run's answers, answers that followed "
          f"its plan (difference: two-stage cluster bootstrap over scenes and frames, {args.resamples} resamples, "
          "95 %); ego action: the class the plan implies against the actions-based-on references.\n")
    print("| run | behaviour: answers | behaviour: plan | safe actions: answers | safe actions: plan | both: plan - "
          "answers | ego action: plan | recorded future (behaviour / safe / action) |")
    print("|---|---|---|---|---|---|---|---|")
    for run, r in rows.items():
        p, rec, d = r["plan"], r["recorded_future"], r["plan_minus_answers"]
        star = " *" if d["lo"] > 0 or d["hi"] < 0 else ""
        print(f"| {run} | {rate(p['behavior'], 'answers')} | {rate(p['behavior'], 'plan')} | "
              f"{rate(p['safe_actions'], 'answers')} | {rate(p['safe_actions'], 'plan')} | "
              f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]{star} | {rate(p['ego_action'], 'plan')} | "
              f"{rate(rec['behavior'], 'plan')} / {rate(rec['safe_actions'], 'plan')} / {rate(rec['ego_action'], 'plan')} |")
    # the seeds of one configuration (runs in the same parent folder), pooled on shared resamples
    groups = {}
    for run in rows:
        groups.setdefault(os.path.dirname(os.path.normpath(run)), []).append(run)
    pooled = {}
    for parent, runs in groups.items():
        if len(runs) > 1:
            d = pooled[parent] = plan_minus_answers([rows[r]["frames"] for r in runs], resamples=args.resamples)
            d["runs"] = runs
            star = " *" if d["lo"] > 0 or d["hi"] < 0 else ""
            print(f"| {parent}, {len(runs)} seeds pooled | | | | | {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]{star} "
                  f"(answers {d['answers']:.3f}, plan {d['plan']:.3f}) | | |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"world": args.world, "resamples": args.resamples, "runs": rows, "pooled": pooled}, fh, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
