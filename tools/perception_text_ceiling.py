"""What copying the detector's line would score: the official match F1 of the perception line as the answer.

``python tools/perception_text_ceiling.py [DET_CONFIG] [DET_CKPT] [--vlm-config C] [--thr 0.2 0.3 0.4]
[--objects 2 3 4 5] [--out FILE.json]``

For every scored frame of the VLM config's test split (the default split: every 3rd val frame), the
stage-1 detector (``configs/bev_det_pretrain.py`` and its checkpoint) decodes the frame, and
:class:`bevlm.models.heads.perception_text.PerceptionText` writes its line ("Detected: car 9 m
<c1,CAM_FRONT,119.0,106.1>; ..."). The line is scored as the answer to the frame's "important
objects" question with the official match F1 (c-tag pixels within L1 16 px of the ground truth's).
The mean over frames, per score threshold and object count, is the F1 a model reaches by copying the
line verbatim: an upper bound of what ``model.perception_text`` offers without learning which objects
matter, and a guide to its settings. Frames are encoded one at a time without history (the stage-1
model has none).
"""
import argparse
import json


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("det_config", nargs="?", default="configs/bev_det_pretrain.py")
    p.add_argument("det_ckpt", nargs="?", default="work_dirs/bev_det_pretrain/iter_1000.pth")
    p.add_argument("--vlm-config", default="configs/bev_vlm.py", help="its test split is scored")
    p.add_argument("--thr", nargs="+", type=float, default=[0.2, 0.3, 0.4], help="score thresholds")
    p.add_argument("--objects", nargs="+", type=int, default=[2, 3, 4, 5], help="max objects per line")
    p.add_argument("--out", help="also write the table as JSON")
    args = p.parse_args()

    from bevlm.engine.det_frames import scored_frame_detections
    from bevlm.evaluation.drivelm_official import match_result
    from bevlm.models.heads.perception_text import PerceptionText

    lines = {(t, k): PerceptionText(score_thr=t, max_objects=k) for t in args.thr for k in args.objects}
    f1 = {key: [] for key in lines}
    frames = scored_frame_detections(args.det_config, args.det_ckpt, args.vlm_config,
                                     wanted=lambda s: any(qa.family == "important_objects" for qa in s.qa))
    for i, n, sample, det in frames:
        gts = [qa.answer for qa in sample.qa if qa.family == "important_objects"]
        for key, pt in lines.items():
            f1[key].append(100 * match_result(pt.describe(pt.objects(det, sample)), gts[0]).f1)
        print(f"\r{i + 1}/{n} frames", end="", flush=True)
    print()
    rows = [{"score_thr": t, "max_objects": k, "frames": len(v), "match_f1": sum(v) / max(len(v), 1)}
            for (t, k), v in f1.items()]
    print("| score_thr | max objects | frames | match F1 of the line as the answer |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['score_thr']} | {r['max_objects']} | {r['frames']} | {r['match_f1']:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"det_config": args.det_config, "det_ckpt": args.det_ckpt, "vlm_config": args.vlm_config,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
