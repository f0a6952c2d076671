"""How well a detector's velocity tells the DriveLM "moving status" of the key objects.

DriveLM asks "What is the moving status of object <cK,CAM,x,y>?" about each key object. This tool
finds, for every such question of the val frames, the ground-truth box the c-tag points at (the box
centre whose projection into the tag's camera is nearest the tag's pixel), the detection nearest that
box (centre within ``--match-dist`` m, score >= ``--score-thr``), and calls the object moving when the
detected speed is >= ``--speed``. It prints, against the questions' answers ("Stopped." or not):
the detector's accuracy on the matched objects, the majority answer's accuracy on the same objects,
and what a perfect estimate of the *current* velocity would give (the answers follow the object's
future mean speed, so even that is not 100 %).

    python tools/motion_check.py work_dirs/bev_det_pretrain_queue-2/test/results_nusc.json \
        --infos data/mini_world/infos/bevlm_infos_val.pkl [--out F.json]

``results_nusc.json`` is the official detection results file ``tools/test.py`` writes for a stage-1
config (global frame, as the nuScenes format has it).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

TAG = re.compile(r"<c\d+,(CAM_[A-Z_]+),([\d.]+),([\d.]+)>")
QUESTION = "What is the moving status of object"


def tag_instance(info: dict, cam: str, x: float, y: float) -> int | None:
    """Index of the instance whose box centre projects nearest to pixel (x, y) of camera ``cam``."""
    im = info["images"][cam]
    ego2cam = np.linalg.inv(np.asarray(im["cam2ego"], dtype=np.float64))
    k = np.asarray(im["cam2img"], dtype=np.float64)
    best, best_d = None, np.inf
    for i, inst in enumerate(info["instances"]):
        p = ego2cam @ np.array([*inst["bbox_3d"][:3], 1.0])
        if p[2] < 0.5:
            continue
        uv = (k @ p[:3])[:2] / p[2]
        d = float(np.hypot(uv[0] - x, uv[1] - y))
        if d < best_d:
            best, best_d = i, d
    return best if best_d < 2.0 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results_nusc.json of a stage-1 test (official detection format)")
    ap.add_argument("--infos", default="data/mini_world/infos/bevlm_infos_val.pkl")
    ap.add_argument("--score-thr", type=float, default=0.3)
    ap.add_argument("--match-dist", type=float, default=2.0, help="detection-to-box centre distance (m)")
    ap.add_argument("--speed", type=float, default=0.5, help="moving at a speed >= this (m/s)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)

    from bevlm.utils import load_plain_pickle  # refuses any pickled global: an info file cannot run code

    for p in (args.results, args.infos):
        if not Path(p).is_file():
            sys.exit(f"motion_check: {p} does not exist (run tools/test.py on a stage-1 config first / "
                     f"create the world with tools/create_data.py)")
    infos = load_plain_pickle(args.infos)["data_list"]
    results = json.loads(Path(args.results).read_text())["results"]
    n_q = n_matched = right = gt_now_right = 0
    labels, preds = [], []
    for info in infos:
        qa = ((info.get("drivelm") or {}).get("QA") or {}).get("perception", [])
        dets = [d for d in results.get(info["token"], []) if d["detection_score"] >= args.score_thr]
        g2e = np.linalg.inv(np.asarray(info["ego2global"], dtype=np.float64))
        det_xy = np.array([(g2e @ np.array([*d["translation"], 1.0]))[:2] for d in dets]).reshape(-1, 2)
        det_v = np.array([(g2e[:3, :3] @ np.array([*d["velocity"], 0.0]))[:2] for d in dets]).reshape(-1, 2)
        for q in qa:
            if not q["Q"].startswith(QUESTION):
                continue
            m = TAG.search(q["Q"])
            if m is None:
                continue
            n_q += 1
            i = tag_instance(info, m.group(1), float(m.group(2)), float(m.group(3)))
            if i is None or not len(dets):
                continue
            inst = info["instances"][i]
            dist = np.hypot(*(det_xy - np.asarray(inst["bbox_3d"][:2])).T)
            j = int(dist.argmin())
            if dist[j] > args.match_dist:
                continue
            n_matched += 1
            moving = not q["A"].strip().startswith("Stopped")
            pred = float(np.hypot(*det_v[j])) >= args.speed
            labels.append(moving)
            preds.append(pred)
            right += pred == moving
            gt_now_right += (float(np.hypot(*inst["velocity"][:2])) >= args.speed) == moving
    if not n_matched:
        sys.exit(f"motion_check: none of the {n_q} moving-status questions' objects has a detection within "
                 f"{args.match_dist} m at score >= {args.score_thr}")
    share_moving = float(np.mean(labels))
    out = {
        "results": args.results, "questions": n_q, "matched": n_matched,
        "detector_accuracy": right / n_matched,
        "majority_accuracy": max(share_moving, 1 - share_moving),
        "current_gt_velocity_accuracy": gt_now_right / n_matched,
        "moving_share": share_moving,
        "detector_recall_moving": float(np.mean([p for p, lab in zip(preds, labels) if lab])) if any(labels) else None,
        "detector_recall_stopped": float(np.mean([not p for p, lab in zip(preds, labels) if not lab]))
        if not all(labels) else None,
        "score_thr": args.score_thr, "match_dist": args.match_dist, "speed": args.speed,
    }
    for k, v in out.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
