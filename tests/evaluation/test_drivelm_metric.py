"""DriveLMMetric end to end on 2 real frames, and the offline scorer tool on its files."""
import contextlib
import io
import json
import os
import sys

import pytest

from bevlm.evaluation import build_test_frame, mc_questions_for_frame
from bevlm.registry import METRICS
from bevlm.structures import DriveDataSample

STAGES = ("perception", "prediction", "planning", "behavior")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _eval_tool():
    """The ``tools/eval_drivelm.py`` module (tools are scripts, not a package)."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import eval_drivelm
    finally:
        sys.path.pop(0)
    return eval_drivelm


def _two_frames(sample):
    scene, sdata = next(iter(sample.items()))
    return [(scene, token, frame) for token, frame in list(sdata["key_frames"].items())[:2]]


def _oracle(frame, scene, token, seed, mc_as_text=False):
    full = [qa for st in STAGES for qa in frame["QA"][st]]
    answers = {i: qa["A"] for i, qa in enumerate(full)}
    for i, mc in mc_questions_for_frame(frame, scene, token, seed).items():
        answers[i] = mc.options[mc.answer] if mc_as_text else mc.answer
    return answers


def _evaluate(metric, frames, **kw):
    samples = []
    for k, (scene, token, frame) in enumerate(frames):
        answers = _oracle(frame, scene, token, metric.seed, **kw)
        if k == 0:  # one frame as a data element (mmengine passes them through to_dict())
            s = DriveDataSample(metainfo=dict(scene_token=scene, token=token))
            s.drivelm_frame, s.pred_answers = frame, answers
            samples.append(s)
        else:
            samples.append(dict(scene_token=scene, token=token, drivelm_frame=frame, pred_answers=answers))
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_oracle_end_to_end_and_tool(sample, tmp_path):
    frames = _two_frames(sample)
    prefix = str(tmp_path / "val")
    metric = METRICS.build(dict(type="DriveLMMetric", seed=7, outfile_prefix=prefix))
    out = _evaluate(metric, frames)
    assert out["drivelm/accuracy"] == 1.0 and out["drivelm/accuracy_normalised"] == 1.0
    assert out["drivelm/CIDEr"] == pytest.approx(10.0, abs=1e-9)
    assert out["drivelm/gpt_free_final"] == pytest.approx(0.5, abs=1e-6)
    assert out["drivelm/final"] is None and out["drivelm/chatgpt"] is None
    assert out["drivelm/missing_gpt_weight"] == 0.5
    assert out["drivelm/tag2_kept"] == 2 and out["drivelm/tag3_kept"] == 2
    n_full = sum(len(f["QA"][st]) for _, _, f in frames for st in STAGES)
    assert out["drivelm/full_total"] == out["drivelm/full_answered"] == n_full
    assert out["drivelm/full_accuracy"] == 1.0
    assert out["drivelm/family/moving_status"] == 1.0 and out["drivelm/family/behavior"] == 1.0
    for suffix in ("output.json", "test_eval.json", "results.json"):
        assert os.path.isfile(f"{prefix}.{suffix}")
    with open(f"{prefix}.output.json") as f:
        rows = json.load(f)
    assert len(rows) == out["drivelm/tag0_kept"] + out["drivelm/tag1_kept"] + 4

    eval_drivelm = _eval_tool()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert eval_drivelm.main(["--pred", f"{prefix}.output.json", "--test", f"{prefix}.test_eval.json",
                                  "--json", str(tmp_path / "report.json")]) == 0
    printed = buf.getvalue()
    assert "GPT-free final" in printed and "0.500000" in printed and "absent" in printed
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["gpt_free_final"] == pytest.approx(out["drivelm/gpt_free_final"], abs=1e-12)


def test_option_text_answers_are_normalised_separately(sample):
    frames = _two_frames(sample)
    metric = METRICS.build(dict(type="DriveLMMetric", seed=0))
    out = _evaluate(metric, frames, mc_as_text=True)
    # 2 behavior MC + at most 2 moving-status MC answered with the option text: wrong by raw equality
    assert out["drivelm/accuracy"] < 1.0
    assert out["drivelm/accuracy_normalised"] == 1.0
    assert out["drivelm/full_accuracy"] == 1.0  # option text equals the free-form GT


def test_missing_answer_names_the_question(sample):
    (scene, token, frame), = _two_frames(sample)[:1]
    answers = _oracle(frame, scene, token, seed=0)
    _, source_index = build_test_frame(frame, scene, token, seed=0)
    del answers[source_index[2]]   # the third test question of the frame
    metric = METRICS.build(dict(type="DriveLMMetric"))
    metric.process({}, [dict(scene_token=scene, token=token, drivelm_frame=frame, pred_answers=answers)])
    with pytest.raises(ValueError, match=rf"{scene}_{token}_2 \(frame QA index {source_index[2]}\)"):
        metric.evaluate(1)


def test_per_question_samples_of_one_frame_are_merged(sample):
    (scene, token, frame), = _two_frames(sample)[:1]
    answers = _oracle(frame, scene, token, seed=0)
    metric = METRICS.build(dict(type="DriveLMMetric"))
    metric.process({}, [dict(scene_token=scene, token=token, drivelm_frame=frame, pred_answers={i: a})
                        for i, a in answers.items()])
    out = metric.evaluate(len(answers))
    assert out["drivelm/accuracy"] == 1.0 and out["drivelm/full_answered"] == len(answers)


def test_eval_tool_warns_on_unknown_prediction_ids_and_strict_refuses(tmp_path, capsys, sample_path):
    eval_drivelm = _eval_tool()
    test_path = str(tmp_path / "test_eval.json")
    assert eval_drivelm.main(["--gt", sample_path, "--write-test", test_path]) == 0
    from bevlm.evaluation import iter_official_ids, load_test_eval

    rows = [{"id": qid, "question": qa["Q"], "answer": qa["A"]} for qid, qa in iter_official_ids(load_test_eval(test_path))]
    rows.append({"id": "not_a_scene_0_0", "question": "q", "answer": "a"})
    pred = tmp_path / "output.json"
    pred.write_text(json.dumps(rows))
    capsys.readouterr()
    assert eval_drivelm.main(["--pred", str(pred), "--test", test_path]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "1 prediction id(s) are not in the test set" in captured.err
    assert "not_a_scene_0_0" in captured.err and "GPT-free final" in captured.out
    assert eval_drivelm.main(["--pred", str(pred), "--test", test_path, "--strict"]) == 2
    assert "error" in capsys.readouterr().err


def test_family_splice_takes_one_family_from_another_run(tmp_path, capsys, sample_path):
    """--family-from: the important-objects answers of an oracle run put into a run that left them
    blank give exactly the oracle's score when every other answer is the oracle's too."""
    eval_drivelm = _eval_tool()
    from bevlm.evaluation import DriveLMEvalError, iter_official_ids, load_test_eval, splice_family
    from bevlm.structures.qa_families import question_family

    test_path = str(tmp_path / "test_eval.json")
    assert eval_drivelm.main(["--gt", sample_path, "--write-test", test_path]) == 0
    test = load_test_eval(test_path)
    items = list(iter_official_ids(test))
    oracle = {qid: qa["A"] for qid, qa in items}
    important = [qid for qid, qa in items if question_family(qa["Q"]) == "important_objects"]
    assert important, "the sample asks no important-objects question: the test checks nothing"
    blank = {qid: ("" if qid in important else a) for qid, a in oracle.items()}
    spliced, n = splice_family(blank, oracle, test, "important_objects")
    assert spliced == oracle and n == len(important)
    # only the answers without the text are replaced: an answer holding it is kept
    keep = important[0]
    marked = dict(blank, **{keep: "<c9,CAM_FRONT,1.0,2.0>"})
    spliced, n = splice_family(marked, oracle, test, "important_objects", only_without="<c")
    assert n == len(important) - 1 and spliced[keep] == "<c9,CAM_FRONT,1.0,2.0>"
    with pytest.raises(DriveLMEvalError, match="no answer for"):
        splice_family(blank, {}, test, "important_objects", source="b.json")
    with pytest.raises(DriveLMEvalError, match="no question of family"):
        splice_family(blank, oracle, test, "sign_meaning_of_nothing")
    for name, rows in (("blank", blank), ("oracle", oracle)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"id": k, "question": "", "answer": v} for k, v in rows.items()]))
    capsys.readouterr()
    args = ["--test", test_path, "--json"]
    assert eval_drivelm.main(["--pred", str(tmp_path / "oracle.json")] + args + [str(tmp_path / "o.json")]) == 0
    assert eval_drivelm.main(["--pred", str(tmp_path / "blank.json")] + args + [str(tmp_path / "b.json")]) == 0
    assert eval_drivelm.main(["--pred", str(tmp_path / "blank.json"), "--family-from", str(tmp_path / "oracle.json"),
                              "important_objects"] + args + [str(tmp_path / "s.json")]) == 0
    assert f"{len(important)} important_objects answer(s) taken from" in capsys.readouterr().out
    score = {k: json.loads((tmp_path / f"{k}.json").read_text())["gpt_free_final"] for k in "obs"}
    assert score["s"] == pytest.approx(score["o"], abs=1e-12) and score["b"] < score["o"]


def test_family_exact_match_counts_by_hand(tmp_path, capsys, sample_path):
    """--families: per-family exact match, hand-counted on the real sample's test set: an oracle run
    scores 1 in every family, a run that blanks one answer of each family loses exactly that one, and
    the c-tag column counts the reference answers that hold pixel coordinates."""
    eval_drivelm = _eval_tool()
    from bevlm.evaluation import family_exact_match, iter_official_ids, load_test_eval
    from bevlm.structures.qa_families import question_family

    test_path = str(tmp_path / "test_eval.json")
    assert eval_drivelm.main(["--gt", sample_path, "--write-test", test_path]) == 0
    test = load_test_eval(test_path)
    items = list(iter_official_ids(test))
    oracle = {qid: "  " + qa["A"] + " " for qid, qa in items}  # stripped before the comparison
    count, ctags, first, answers = {}, {}, {}, {}
    for qid, qa in items:
        f = question_family(qa["Q"])
        count[f] = count.get(f, 0) + 1
        answers.setdefault(f, set()).add(qa["A"].strip())
        ctags[f] = ctags.get(f, 0) + ("<c" in qa["A"] and any(ch.isdigit() for ch in qa["A"].split("<c", 1)[1]))
        first.setdefault(f, qid)
    assert len(count) >= 3 and sum(ctags.values()) > 0, "the sample must ask several families, some with c-tags"
    table = family_exact_match(oracle, test)
    everything = set().union(*answers.values())
    assert list(table)[-1] == "all" and table["all"] == {"questions": len(items), "exact": len(items),
                                                         "with_ctag": sum(ctags.values()), "distinct": len(everything)}
    for f, n in count.items():
        assert table[f] == {"questions": n, "exact": n, "with_ctag": ctags[f], "distinct": len(answers[f])}
    one_wrong = {qid: ("wrong" if qid in first.values() else a) for qid, a in oracle.items()}
    table = family_exact_match(one_wrong, test)
    assert all(table[f]["exact"] == n - 1 for f, n in count.items())
    # one text for every question: one distinct answer per family
    assert all(row["distinct"] == 1 for row in family_exact_match(dict.fromkeys(oracle, "Yes."), test).values())
    # unanswered questions are left out
    dropped = first[next(iter(count))]
    table = family_exact_match({k: v for k, v in oracle.items() if k != dropped}, test)
    assert table["all"]["questions"] == len(items) - 1
    for name, rows in (("oracle", oracle), ("one_wrong", one_wrong)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"id": k, "question": "", "answer": v} for k, v in rows.items()]))
    capsys.readouterr()
    assert eval_drivelm.main(["--test", test_path, "--families", "--pred", str(tmp_path / "oracle.json"),
                              str(tmp_path / "one_wrong.json")]) == 0
    out = capsys.readouterr().out
    assert (f"| all | {len(items)} | {sum(ctags.values())} | 1.000 ({len(everything)}) | "
            f"{(len(items) - len(count)) / len(items):.3f} (") in out
    with pytest.raises(SystemExit):  # several prediction files only with --families
        eval_drivelm.main(["--test", test_path, "--pred", str(tmp_path / "oracle.json"), str(tmp_path / "one_wrong.json")])
