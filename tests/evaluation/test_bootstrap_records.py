"""Per-frame records of a test run (per_frame.json) and the bootstrap of the planning metrics."""
import json

import numpy as np
import pytest

from bevlm.evaluation import (DriveLMEvalError, EfficiencyMetric, PlanningMetric, build_test_eval,
                              iter_official_ids, write_predictions, write_test_eval)
from bevlm.evaluation.bootstrap import PairedBootstrap, load_run, paired_bootstrap


def _gt(k):
    return np.stack([np.arange(1, 7) * (1.0 + 0.1 * k), np.full(6, 0.05 * k)], 1)  # [6, 2]


def _write_run(folder, test, shift, mask_last=False):
    """A fake test run: official files with GT answers, planning offset by ``shift`` m, efficiency."""
    pred = {qid: qa["A"] for qid, qa in iter_official_ids(test)}
    write_test_eval(test, str(folder / "drivelm.test_eval.json"))
    write_predictions(pred, test, str(folder / "drivelm.output.json"))
    samples = []
    frames = [(scene, tok) for scene, s in test.items() for tok in s["key_frames"]]
    for k, (scene, tok) in enumerate(frames):
        mask = np.ones(6, bool)
        if mask_last and k == 0:
            mask[-1] = False
        samples.append({"token": tok, "scene_token": scene, "gt_traj": _gt(k), "gt_traj_mask": mask,
                        "pred_traj": _gt(k) + np.asarray(shift), "efficiency": {
                            "encoder_s": 0.1 * (k + 1), "prefill_s": 0.2, "decode_s": 1.0 + k, "traj_s": 0.0,
                            "tokens": 10 * (k + 1), "questions": 8}})
    planning = PlanningMetric(outfile_prefix=str(folder))
    planning.process(None, samples)
    metrics = planning.compute_metrics(planning.results)
    eff = EfficiencyMetric(outfile_prefix=str(folder))
    eff.process(None, samples)
    eff.compute_metrics(eff.results)
    return metrics, frames


@pytest.fixture(scope="module")
def test2(sample):
    test = build_test_eval(sample, seed=0)
    frames = [(tok, fr) for scene in test.values() for tok, fr in scene["key_frames"].items()]
    return {f"scene{k}": {"key_frames": dict(frames[3 * k:3 * k + 3])} for k in range(3)}


def test_per_frame_records_are_written_by_the_metrics(tmp_path, test2):
    metrics, frames = _write_run(tmp_path, test2, (0.3, 0.4), mask_last=True)
    data = json.loads((tmp_path / "per_frame.json").read_text())
    assert set(data) == {"planning", "efficiency"}  # the second metric kept the first one's section
    assert list(data["planning"]) == [tok for _, tok in frames]
    rec = data["planning"][frames[0][1]]
    assert rec["scene_token"] == "scene0"
    assert rec["l2"] == pytest.approx([0.5] * 6) and rec["collision"] == [0.0] * 6
    assert rec["gt_traj_mask"] == [True] * 5 + [False]
    assert rec["pred_traj"][0] == pytest.approx([1.3, 0.4]) and rec["gt_traj"][0] == pytest.approx([1.0, 0.0])
    eff = data["efficiency"][frames[2][1]]
    assert eff["scene_token"] == "scene0" and eff["tokens"] == 30
    assert eff["frame_s"] == pytest.approx(0.3 + 0.2 + 3.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # atomic writes leave nothing
    # a second run into the same folder replaces the section whole (no frame of the first survives)
    planning = PlanningMetric(outfile_prefix=str(tmp_path))
    planning.process(None, [{"token": "z", "scene_token": "s", "gt_traj": _gt(0), "gt_traj_mask": np.ones(6),
                             "pred_traj": _gt(0)}])
    planning.compute_metrics(planning.results)
    data = json.loads((tmp_path / "per_frame.json").read_text())
    assert list(data["planning"]) == ["z"] and len(data["efficiency"]) == len(frames)


def test_planning_bootstrap_full_set_equals_the_metric_and_a_known_shift(tmp_path, test2):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    metrics_a, _ = _write_run(tmp_path / "a", test2, (0.0, 0.1), mask_last=True)
    _write_run(tmp_path / "b", test2, (0.3, 0.5), mask_last=True)
    pb = PairedBootstrap([load_run(str(tmp_path / "a")), load_run(str(tmp_path / "b"))])
    full = pb.full_scores(0)
    for key in ("L2_avg_stp3", "L2_1s_stp3", "L2_3s_stp3", "L2_3s_uniad", "collision_avg_stp3"):
        assert full[f"planning/{key}"] == pytest.approx(metrics_a[key]), key
    assert full["efficiency/frame_s"] == pytest.approx(np.mean([0.1 * (k + 1) + 1.2 + k for k in range(9)]))
    res = pb.compare(resamples=300, seed=0)["metrics"]
    # |(0.3, 0.5)| - |(0, 0.1)| = sqrt(0.34) - 0.1 on every valid step of every frame
    want = np.sqrt(0.34) - 0.1
    m = res["planning/L2_avg_stp3"]
    assert m["diff"] == pytest.approx(want) and m["lo"] == pytest.approx(want) and m["hi"] == pytest.approx(want)
    assert m["significant"]
    assert res["drivelm/gpt_free_final"]["diff"] == 0.0 and not res["drivelm/gpt_free_final"]["significant"]
    assert res["efficiency/frame_s"]["diff"] == 0.0


def test_runs_on_other_planning_frames_are_refused(tmp_path, test2):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_run(tmp_path / "a", test2, (0.0, 0.0))
    _write_run(tmp_path / "b", test2, (0.0, 0.0))
    data = json.loads((tmp_path / "b" / "per_frame.json").read_text())
    data["planning"].pop(next(iter(data["planning"])))
    (tmp_path / "b" / "per_frame.json").write_text(json.dumps(data))
    with pytest.raises(DriveLMEvalError, match="section 'planning' covers other frames"):
        paired_bootstrap(str(tmp_path / "a"), str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="--out-dir of tools/test.py"):
        load_run(str(tmp_path / "missing"))


def _compare_tool():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("compare_tool", f"{REPO}/tools/compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_tool_marks_differences_that_exclude_zero(tmp_path, test2, capsys):
    for name, shift in (("ref", (0.0, 0.1)), ("same", (0.0, 0.1)), ("worse", (0.3, 0.5))):
        (tmp_path / name).mkdir()
        _write_run(tmp_path / name, test2, shift)
    tool = _compare_tool()
    out = tmp_path / "table.md"
    assert tool.main([str(tmp_path / "ref"), str(tmp_path / "same"), str(tmp_path / "worse"),
                      "--resamples", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == out.read_text() + "\n"
    same, worse = text.split("worse vs ref")
    assert "same vs ref (9 frames in 3 scenes" in same and "200 paired two-stage cluster bootstrap" in same
    assert "* " not in same  # identical runs: nothing marked
    row = next(line for line in worse.splitlines() if line.startswith("| planning/L2_avg_stp3 |"))
    want = np.sqrt(0.34) - 0.1
    assert f"| {want:+.4g} | [{want:+.4g}, {want:+.4g}] | * worse |" in row
    assert "| drivelm/gpt_free_final | 0.5 | 0.5 | +0 | [+0, +0] |  |" in worse  # the oracle scores 0.5
    numbers = json.loads((tmp_path / "table.json").read_text())
    assert numbers["results"][str(tmp_path / "worse")]["metrics"]["planning/L2_avg_stp3"]["significant"]


def test_compare_tool_refuses_runs_on_other_frames(tmp_path, test2, capsys):
    (tmp_path / "ref").mkdir()
    (tmp_path / "sub").mkdir()
    _write_run(tmp_path / "ref", test2, (0.0, 0.0))
    _write_run(tmp_path / "sub", {k: test2[k] for k in ("scene0", "scene1")}, (0.0, 0.0))
    assert _compare_tool().main([str(tmp_path / "ref"), str(tmp_path / "sub")]) == 2
    err = capsys.readouterr().err
    assert "other questions" in err and "only in the reference" in err and "Fix:" in err


def test_ratio_intervals_and_the_benchmark_speedup_columns(tmp_path, test2):
    """``compare_ratios``: B / A per resample; a run twice as fast on every frame gives frame_s ratio
    0.5 with a zero-width interval, and the benchmark's ``speedup`` column (inverted) 2.0."""
    from bevlm.engine.benchmark import add_intervals

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _write_run(tmp_path / name, test2, (0.0, 0.1))
    data = json.loads((tmp_path / "b" / "per_frame.json").read_text())
    for rec in data["efficiency"].values():
        rec["frame_s"] *= 0.5
    (tmp_path / "b" / "per_frame.json").write_text(json.dumps(data))
    pb = PairedBootstrap([str(tmp_path / "a"), str(tmp_path / "b")])
    r = pb.compare_ratios(0, 1, ["efficiency/frame_s", "drivelm/gpt_free_final", "no/such"], resamples=200)
    assert set(r) == {"efficiency/frame_s", "drivelm/gpt_free_final"}
    assert r["efficiency/frame_s"]["ratio"] == pytest.approx(0.5)
    assert r["efficiency/frame_s"]["lo"] == pytest.approx(0.5) and r["efficiency/frame_s"]["hi"] == pytest.approx(0.5)
    assert r["drivelm/gpt_free_final"]["ratio"] == pytest.approx(1.0)
    summary = {"rows": {"a": {}, "b": {}}}
    add_intervals(summary, {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, resamples=200)
    b = summary["rows"]["b"]
    assert b["speedup"] == pytest.approx(2.0) and b["speedup_lo"] == pytest.approx(2.0) == b["speedup_hi"]
    assert b["rel_score"] == pytest.approx(1.0) and b["rel_score_lo"] == pytest.approx(1.0)
    assert summary["intervals"]["scenes"] == 3 and summary["rows"]["a"]["speedup_lo"] == pytest.approx(1.0)


def test_compare_tool_pools_draws_of_one_variant(tmp_path, test2, capsys):
    """``--pooled``: the mean of the draws' differences (every resample applied to each draw), each
    draw's difference and their standard deviation, hand-computed from two planning shifts."""
    for name, shift in (("ref", (0.0, 0.1)), ("d0", (0.0, 0.1)), ("d1", (0.3, 0.5))):
        (tmp_path / name).mkdir()
        _write_run(tmp_path / name, test2, shift)
    tool = _compare_tool()
    out = tmp_path / "pooled.md"
    assert tool.main([str(tmp_path / "ref"), str(tmp_path / "d0"), str(tmp_path / "d1"), "--pooled", "rot",
                      "--resamples", "100", "--metrics", "planning/L2_avg_stp3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    pooled = text.split("rot (mean of 2 draws) vs ref")[1]
    d = np.sqrt(0.34) - 0.1
    row = next(line for line in pooled.splitlines() if line.startswith("| planning/L2_avg_stp3 |"))
    assert f"| {d / 2:+.4g} | [{d / 2:+.4g}, {d / 2:+.4g}] | * worse | +0, {d:+.4g} | {d / np.sqrt(2):.4g} |" in row
    numbers = json.loads((tmp_path / "pooled.json").read_text())["results"]["pooled:rot"]
    assert numbers["pairs"] == [[0, 1], [0, 2]]
    assert numbers["draw_diffs"]["planning/L2_avg_stp3"] == pytest.approx([0.0, d])
    # one draw is not a pool: refused before any file is read
    assert tool.main([str(tmp_path / "ref"), str(tmp_path / "d0"), "--pooled", "rot"]) == 2
    assert "at least two run folders" in capsys.readouterr().err


def test_compare_tool_pairs_each_run_with_its_own_reference(tmp_path, test2, capsys):
    """``--paired``: (reference, run) pairs, e.g. one per training seed. Pair 0 is shifted by the same
    plan as its reference (difference 0), pair 1's run is worse than its own reference by a known
    L2; against a single shared reference the pooled difference would differ."""
    shifts = {"a0": (0.0, 0.1), "b0": (0.0, 0.1), "a1": (0.3, 0.5), "b1": (0.6, 0.8)}
    for name, shift in shifts.items():
        (tmp_path / name).mkdir()
        _write_run(tmp_path / name, test2, shift)
    tool = _compare_tool()
    out = tmp_path / "paired.md"
    args = [str(tmp_path / n) for n in ("a0", "b0", "a1", "b1")]
    assert tool.main(["--paired", *args, "--pooled", "seeds", "--resamples", "100",
                      "--metrics", "planning/L2_avg_stp3", "--out", str(out)]) == 0
    d1 = np.sqrt(0.6 ** 2 + 0.8 ** 2) - np.sqrt(0.3 ** 2 + 0.5 ** 2)
    numbers = json.loads((tmp_path / "paired.json").read_text())
    assert numbers["pairs"] == [[args[0], args[1]], [args[2], args[3]]]
    res = numbers["results"]
    assert res[args[1]]["metrics"]["planning/L2_avg_stp3"]["diff"] == pytest.approx(0.0)
    assert res[args[3]]["metrics"]["planning/L2_avg_stp3"]["diff"] == pytest.approx(d1)
    pooled = res["pooled:seeds"]
    assert pooled["pairs"] == [[0, 1], [2, 3]]
    assert pooled["metrics"]["planning/L2_avg_stp3"]["diff"] == pytest.approx(d1 / 2)
    assert pooled["draw_diffs"]["planning/L2_avg_stp3"] == pytest.approx([0.0, d1])
    # an odd number of folders is not a list of pairs: refused before any file is read
    assert tool.main(["--paired", *args[:3]]) == 2
    assert "(reference, run) pairs" in capsys.readouterr().err


def test_compare_tool_adds_family_rows_to_named_metrics(tmp_path, test2, capsys):
    for name, shift in (("ref", (0.0, 0.1)), ("run", (0.0, 0.1))):
        (tmp_path / name).mkdir()
        _write_run(tmp_path / name, test2, shift)
    tool = _compare_tool()
    assert tool.main([str(tmp_path / "ref"), str(tmp_path / "run"), "--resamples", "50",
                      "--metrics", "drivelm/test_exact_match", "--by-family"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| drivelm/")]
    assert rows[0].startswith("| drivelm/test_exact_match |")
    assert len(rows) > 2 and all(r.startswith("| drivelm/exact_match/") for r in rows[1:])
    assert tool.main([str(tmp_path / "ref"), str(tmp_path / "run"), "--resamples", "50",
                      "--metrics", "drivelm/test_exact_match"]) == 0
    assert "exact_match/" not in capsys.readouterr().out
