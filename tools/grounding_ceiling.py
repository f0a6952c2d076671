"""What the grounded position alone says: the collision-action answers of the world's rule, applied to
the detected position that question grounding writes after each c-tag.

``python tools/grounding_ceiling.py [DET_CONFIG] [DET_CKPT] [--vlm-config C] [--radius 20 40 80]
[--thr 0.1 0.3] [--out FILE.json]``

For every scored frame of the VLM config's test split (the default split: every 3rd val frame), the
stage-1 detector decodes the frame, and :class:`bevlm.models.heads.question_grounding.QuestionGrounding`
finds the detection a collision-action question's c-tag names ("What actions taken by the ego vehicle
can lead to a collision with <c1,CAM_BACK,...>?"). The mini world answers that question from where the
object stands (:func:`bevlm.world.drivelm_qa.collision_action`: ahead in the ego's path ->
"Accelerate and go straight.", ahead to one side -> a turn to that side, ...). Applying that rule to the
detected position (an undetected object -> "No such action will lead to a collision.") gives the
exact match a model reaches that reads the grounding perfectly and knows the rule: an upper bound of
what ``model.question_grounding`` offers this family, and a guide to its settings. Frames are encoded
one at a time without history (the stage-1 model has none).
"""
import argparse
import json


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("det_config", nargs="?", default="configs/bev_det_pretrain.py")
    p.add_argument("det_ckpt", nargs="?", default="work_dirs/bev_det_pretrain/iter_1000.pth")
    p.add_argument("--vlm-config", default="configs/bev_vlm.py", help="its test split is scored")
    p.add_argument("--radius", nargs="+", type=float, default=[20.0, 40.0, 80.0], help="grounding radii (px)")
    p.add_argument("--thr", nargs="+", type=float, default=[0.1, 0.3], help="score thresholds")
    p.add_argument("--out", help="also write the table as JSON")
    args = p.parse_args()

    from bevlm.engine.det_frames import scored_frame_detections
    from bevlm.models.heads.question_grounding import QuestionGrounding
    from bevlm.structures.qa_families import CTAG_RE
    from bevlm.world.drivelm_qa import ObjFacts, collision_action

    settings = {(r, t): QuestionGrounding(radius=r, score_thr=t) for r in args.radius for t in args.thr}
    hits = {key: [] for key in settings}
    found = {key: 0 for key in settings}
    frames = scored_frame_detections(args.det_config, args.det_ckpt, args.vlm_config,
                                     wanted=lambda s: any(qa.family == "collision_actions" for qa in s.qa))
    for i, n, sample, det in frames:
        questions = [qa for qa in sample.qa if qa.family == "collision_actions"]
        if any(not qa.answer for qa in questions):
            raise ValueError(f"{args.vlm_config}: the test split's collision-action questions carry no reference "
                             f"answers (a questions file without answers); score a split read from the info files")
        for key, grounding in settings.items():
            centres = grounding.candidates(det)
            for qa in questions:
                m = CTAG_RE.search(qa.question)
                xy = grounding.locate(centres, sample, m.group(2), float(m.group(3)), float(m.group(4)))
                if xy is None:
                    answer = "No such action will lead to a collision."
                else:
                    found[key] += 1
                    answer = collision_action(ObjFacts(ann="", category="vehicle.car", attribute=None, x=xy[0],
                                                       y=xy[1], direction="", perceived=True))
                hits[key].append(float(answer == qa.answer))
        print(f"\r{i + 1}/{n} frames", end="", flush=True)
    print()
    rows = [{"radius_px": r, "score_thr": t, "questions": len(v), "grounded": found[(r, t)],
             "exact_match": sum(v) / max(len(v), 1)} for (r, t), v in hits.items()]
    print("| radius (px) | score_thr | questions | grounded | exact match of the rule on the grounding |\n"
          "|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['radius_px']:g} | {r['score_thr']} | {r['questions']} | {r['grounded']} | {r['exact_match']:.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"det_config": args.det_config, "det_ckpt": args.det_ckpt, "vlm_config": args.vlm_config,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
