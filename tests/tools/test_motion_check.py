"""tools/motion_check.py on the tiny world: detections made from the ground-truth boxes (global frame, as
the official results format has them) reproduce the current-velocity figure exactly; zero velocities
call every object stopped."""
import json
import os
import subprocess
import sys

import numpy as np

from bevlm.utils import load_plain_pickle
from tests.conftest import REPO


def _results(infos, scale):
    out = {}
    for info in infos:
        e2g = np.asarray(info["ego2global"], dtype=np.float64)
        dets = []
        for inst in info["instances"]:
            c = e2g @ np.array([*inst["bbox_3d"][:3], 1.0])
            v = e2g[:3, :3] @ np.array([*inst["velocity"][:2], 0.0]) * scale
            dets.append({"translation": c[:3].tolist(), "velocity": v[:2].tolist(), "detection_score": 0.9})
        out[info["token"]] = dets
    return {"results": out}


def _run(tmp_path, world, results):
    res = tmp_path / "results_nusc.json"
    res.write_text(json.dumps(results))
    out = tmp_path / "motion.json"
    proc = subprocess.run([sys.executable, "tools/motion_check.py", str(res), "--infos",
                           f"{world}/infos/bevlm_infos_val.pkl", "--out", str(out)], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_ground_truth_velocity_gives_the_current_velocity_figure(tiny_world, tmp_path):
    infos = load_plain_pickle(f"{tiny_world}/infos/bevlm_infos_val.pkl")["data_list"]
    proc, fig = _run(tmp_path, tiny_world, _results(infos, 1.0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fig["matched"] > 0 and fig["matched"] <= fig["questions"]
    assert fig["detector_accuracy"] == fig["current_gt_velocity_accuracy"]
    proc, still = _run(tmp_path, tiny_world, _results(infos, 0.0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every object called stopped: right exactly on the stopped ones
    assert abs(still["detector_accuracy"] - (1 - still["moving_share"])) < 1e-9
    assert still["detector_recall_moving"] in (0.0, None)


def test_refuses_a_missing_results_file(tiny_world, tmp_path):
    proc = subprocess.run([sys.executable, "tools/motion_check.py", str(tmp_path / "none.json"), "--infos",
                           f"{tiny_world}/infos/bevlm_infos_val.pkl"], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
