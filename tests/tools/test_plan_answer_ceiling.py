"""tools/plan_answer_ceiling.py end to end on a generated world: two seeds of a made-up run whose
plans are the recorded future and whose answers are the references except on behaviour."""
import json
import os
import subprocess
import sys

from bevlm.datasets.drivelm_io import load_drivelm
from bevlm.evaluation import build_test_eval
from bevlm.evaluation.drivelm_files import write_predictions, write_test_eval
from bevlm.evaluation.drivelm_testset import iter_official_ids
from bevlm.structures.qa_families import question_family
from tests.conftest import REPO


def _run(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/plan_answer_ceiling.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _fake_run(run_dir, test, gt):
    os.makedirs(run_dir / "test")
    write_test_eval(test, str(run_dir / "test" / "drivelm.test_eval.json"))
    answers = {qid: ("Z" if question_family(qa["Q"]) == "behavior" else qa["A"])
               for qid, qa in iter_official_ids(test)}
    write_predictions(answers, test, str(run_dir / "test" / "drivelm.output.json"))
    tokens = [t for scene in test.values() for t in scene["key_frames"]]
    planning = {t: {"pred_traj": gt[t]["ego_future_traj"]} for t in tokens}
    (run_dir / "test" / "per_frame.json").write_text(json.dumps({"planning": planning}))


def test_table_json_and_pooled_seeds(tiny_world, tmp_path):
    test = build_test_eval(load_drivelm(f"{tiny_world}/drivelm_train.json"), seed=0)
    with open(f"{tiny_world}/world_gt.json") as fh:
        gt = json.load(fh)
    runs = [tmp_path / "model" / f"seed{s}" for s in (0, 1)]
    for run in runs:
        _fake_run(run, test, gt)
    out = tmp_path / "plan.json"
    proc = _run([*map(str, runs), "--world", tiny_world, "--resamples", "100", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| behaviour: answers | behaviour: plan |" in proc.stdout and "2 seeds pooled" in proc.stdout
    res = json.loads(out.read_text())
    row = res["runs"][str(runs[0])]
    n = row["plan"]["behavior"]["questions"]
    assert n == len(row["frames"]) and row["plan"]["behavior"]["answers"] == 0  # every behaviour answer wrong
    assert row["plan"]["safe_actions"]["answers"] == row["plan"]["safe_actions"]["questions"]
    assert row["recorded_future"] == {k: dict(v, answers=None) for k, v in row["plan"].items()}  # same plans
    pooled = res["pooled"][str(tmp_path / "model")]
    assert pooled["diff"] == row["plan_minus_answers"]["diff"] and pooled["runs"] == [str(r) for r in runs]


def test_missing_world_or_run_files_are_named(tiny_world, tmp_path):
    proc = _run([str(tmp_path), "--world", str(tmp_path)])
    assert proc.returncode != 0 and "world_gt.json not found" in proc.stderr and "--world" in proc.stderr
    proc = _run([str(tmp_path), "--world", tiny_world])
    assert proc.returncode != 0 and "lacks per_frame.json" in proc.stderr
    # a run of another world: its frames are not in this world's world_gt.json
    test = build_test_eval(load_drivelm(f"{tiny_world}/drivelm_train.json"), seed=0)
    other = tmp_path / "other"
    os.makedirs(other / "w")
    (other / "w" / "world_gt.json").write_text("{}")
    _fake_run(other / "run", test, json.load(open(f"{tiny_world}/world_gt.json")))
    proc = _run([str(other / "run"), "--world", str(other / "w")])
    assert proc.returncode != 0 and "not in world_gt.json" in proc.stderr and "--world" in proc.stderr
