"""Questions-only DriveLM test files -> the challenge submission: reader, dataset, writer."""
import json

import pytest
from mmengine.registry import init_default_scope

from bevlm.datasets import BEVDriveDataset
from bevlm.datasets.converters import create_drivelm_only_infos
from bevlm.datasets.drivelm_io import (DriveLMFormatError, iter_test_questions, load_drivelm,
                                       load_drivelm_questions)
from bevlm.evaluation import (DriveLMEvalError, DriveLMSubmissionWriter, build_test_eval, build_test_frame,
                              iter_official_ids, load_predictions, strip_answers)
from tests.paths import DRIVELM_SAMPLE_IMAGES, DRIVELM_SAMPLE_JSON

init_default_scope("bevlm")
PIPELINE = [dict(type="LoadMultiViewImages"), dict(type="ResizeMultiViewImages", size=(64, 36)),
            dict(type="PackDriveInputs")]


@pytest.fixture(scope="module")
def sample_test_eval():
    return build_test_eval(load_drivelm(DRIVELM_SAMPLE_JSON), seed=0)


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_questions_only_file_keeps_questions_tags_and_ids(tmp_path, sample_test_eval):
    q_only = strip_answers(sample_test_eval)
    assert not any("A" in item for _, item in iter_official_ids(q_only))
    path = _write(tmp_path / "q.json", q_only)
    loaded = load_drivelm_questions(path)
    ids = [f"{s}_{f}_{i}" for s, f, i, _, _ in iter_test_questions(loaded)]
    ref = list(iter_official_ids(sample_test_eval))
    assert ids == [qid for qid, _ in ref] and len(ids) == 66
    assert [item["Q"] for *_, item in iter_test_questions(loaded)] == [qa["Q"] for _, qa in ref]
    assert [item["tag"] for *_, item in iter_test_questions(loaded)] == [qa["tag"] for _, qa in ref]
    # a test_eval.json (with answers) is accepted as well
    assert load_drivelm_questions(_write(tmp_path / "t.json", sample_test_eval)) == sample_test_eval


@pytest.mark.parametrize("mutate, words", [
    (lambda d: [], "top level"),
    (lambda d: {"s": {"frames": {}}}, "'key_frames'"),
    (lambda d: {"s": {"key_frames": {"f": {"QA": {"perception": [{"tag": [0]}]}}}}}, "'Q'"),
    (lambda d: {"s": {"key_frames": {"f": {"QA": {"perception": [{"Q": "x?", "tag": "0"}]}}}}}, "'tag'"),
    (lambda d: {"s": {"key_frames": {"f": {"QA": {"percepton": [{"Q": "x?"}]}}}}}, "unknown stage"),
    (lambda d: {"s": {"key_frames": {"f": {"QA": {"perception": []}}}}}, "no questions"),
    (lambda d: {"s": {"key_frames": {"f": {"QA": {"perception": [{"Q": "Is <c1,CAM_TOP,1.0,2.0> moving?"}]}}}}},
     "CAM_TOP"),
])
def test_bad_questions_file_names_file_key_and_fix(tmp_path, mutate, words):
    path = _write(tmp_path / "bad.json", mutate(None))
    with pytest.raises(DriveLMFormatError, match=words) as e:
        load_drivelm_questions(path)
    assert path in str(e.value) and "Fix:" in str(e.value)
    with pytest.raises(FileNotFoundError, match="Fix:"):
        load_drivelm_questions(str(tmp_path / "missing.json"))


def test_dataset_asks_exactly_the_files_questions(tmp_path, sample_test_eval):
    infos = create_drivelm_only_infos(DRIVELM_SAMPLE_JSON, DRIVELM_SAMPLE_IMAGES, str(tmp_path / "s.pkl"))
    q_path = _write(tmp_path / "q.json", strip_answers(sample_test_eval))
    ds = BEVDriveDataset(infos, PIPELINE, questions_file=q_path, test_mode=True)
    scored = BEVDriveDataset(infos, PIPELINE, qa_mode="frame", qa_select="test", test_mode=True)
    assert len(ds) == len(scored) == 9
    data = load_drivelm(DRIVELM_SAMPLE_JSON)
    for entry, ref in zip(ds.data_list, scored.data_list):
        frame = ds.frames[entry["frame"]]
        assert entry["frame"] == ref["frame"]
        # same questions (MC options included); index = the official i, mapped to the full-frame
        # index of the scored dataset by the test-format selection
        _, source_index = build_test_frame(data[frame["scene_token"]]["key_frames"][frame["token"]],
                                           frame["scene_token"], frame["token"], 0)
        by_full = {q.index: q for q in ref["qa"]}
        assert [q.index for q in entry["qa"]] == list(range(len(entry["qa"])))
        assert [q.question for q in entry["qa"]] == [by_full[source_index[q.index]].question for q in entry["qa"]]
        assert all(q.answer == "" for q in entry["qa"])
    # a frame the info file does not hold: named, with the fix
    bad = strip_answers(sample_test_eval)
    scene = next(iter(bad))
    bad[scene]["key_frames"]["no_such_frame"] = next(iter(bad[scene]["key_frames"].values()))
    with pytest.raises(ValueError, match="no_such_frame.*Fix:"):
        BEVDriveDataset(infos, PIPELINE, questions_file=_write(tmp_path / "bad.json", bad), test_mode=True)


def test_writer_writes_output_and_submission_in_official_order(tmp_path, sample_test_eval):
    q_path = _write(tmp_path / "q.json", strip_answers(sample_test_eval))
    prefix = str(tmp_path / "out" / "drivelm")
    info = dict(method="bev-vlm", team="t", authors="A. One, B. Two", country="X")
    writer = DriveLMSubmissionWriter(q_path, outfile_prefix=prefix, submission_info=info)
    frames = {}
    for s, f, i, _, _ in iter_test_questions(sample_test_eval):
        frames.setdefault((s, f), {})[i] = f"answer {s[:4]} {f[:4]} {i}"
    samples = [{"scene_token": s, "token": f, "pred_answers": a} for (s, f), a in frames.items()]
    writer.process({}, samples[::-1])  # any frame order
    metrics = writer.compute_metrics(writer.results)
    assert metrics == {"questions": 66, "frames": 9}
    rows = json.load(open(prefix + ".output.json"))
    assert [r["id"] for r in rows] == [qid for qid, _ in iter_official_ids(sample_test_eval)]
    assert all(r["answer"] == frames[(r["id"].split("_")[0], r["id"].split("_")[1])][int(r["id"].split("_")[2])]
               for r in rows)
    sub = json.load(open(prefix + ".submission.json"))
    assert list(sub) == ["method", "team", "authors", "email", "institution", "country", "results"]
    assert sub["authors"] == ["A. One", "B. Two"] and sub["email"] == "" and sub["results"] == rows
    assert load_predictions(prefix + ".submission.json") == {r["id"]: r["answer"] for r in rows}
    # a missing answer stops the run, naming the id; nothing partial is written
    writer2 = DriveLMSubmissionWriter(q_path, outfile_prefix=str(tmp_path / "o2" / "d"))
    del samples[0]["pred_answers"][0]
    writer2.process({}, samples)
    with pytest.raises(DriveLMEvalError, match=f"{samples[0]['scene_token']}_{samples[0]['token']}_0"):
        writer2.compute_metrics(writer2.results)
    assert not (tmp_path / "o2").exists()
    with pytest.raises(ValueError, match="unknown submission field"):
        DriveLMSubmissionWriter(q_path, outfile_prefix=prefix, submission_info={"teams": "x"})


def test_nuscenes_infos_for_a_questions_file(tiny_world, tmp_path):
    """create_nuscenes_infos(question_jsons=...) holds every key frame of the file's scenes without QA,
    and the dataset asks the file's questions on them."""
    import os
    import pickle

    from bevlm.datasets.converters import create_nuscenes_infos
    from bevlm.world import WorldConfig

    val = load_drivelm(os.path.join(tiny_world, "drivelm_val.json"))
    q_path = _write(tmp_path / "q.json", strip_answers(build_test_eval(val)))
    written = create_nuscenes_infos(tiny_world, WorldConfig().version, str(tmp_path / "infos"),
                                    question_jsons={"test": q_path})
    assert set(written) == {"test"}
    with open(written["test"], "rb") as f:
        infos = pickle.load(f)
    assert {i["scene_token"] for i in infos["data_list"]} == set(val)
    assert all(i["drivelm"] is None for i in infos["data_list"])
    assert {f for s in val.values() for f in s["key_frames"]} <= {i["token"] for i in infos["data_list"]}
    ds = BEVDriveDataset(written["test"], PIPELINE, questions_file=q_path, data_root=tiny_world, test_mode=True)
    assert sum(len(e["qa"]) for e in ds.data_list) == sum(1 for _ in iter_test_questions(load_drivelm_questions(q_path)))
    bad = strip_answers(build_test_eval(val))
    bad["not_a_scene"] = next(iter(bad.values()))
    with pytest.raises(KeyError, match="not_a_scene.*Fix:"):
        create_nuscenes_infos(tiny_world, WorldConfig().version, str(tmp_path / "infos2"),
                              question_jsons={"test": _write(tmp_path / "bad.json", bad)})
