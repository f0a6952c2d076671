import os

import pytest
import torch
from mmengine.registry import init_default_scope

from bevlm.datasets import BEVDriveDataset
from bevlm.datasets.converters import build_drivelm_only_infos, create_drivelm_only_infos

from .conftest import PIPELINE, SAMPLE_IMAGES, SAMPLE_JSON

init_default_scope("bevlm")


def test_real_drivelm_sample_parses(tmp_path, caplog):
    infos = build_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES)
    assert len(infos) == 9
    assert sum(len(i["images"]) for i in infos) == 54
    assert any("NOMINAL" in r.message for r in caplog.records)
    path = create_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES, str(tmp_path / "s.pkl"))
    ds = BEVDriveDataset(path, PIPELINE[:1] + [dict(type="ResizeMultiViewImages", size=(64, 36)),
                                              dict(type="PackDriveInputs")],
                         qa_mode="frame", queue_length=2)
    assert len(ds) == 9
    assert sum(len(ds.data_list[i]["qa"]) for i in range(len(ds))) == 790
    item = ds[0]
    assert item["inputs"]["imgs"].shape == (2, 6, 3, 36, 64)
    sample = item["data_samples"]
    assert sample.nominal_rig
    assert sample.ori_shape == (900, 1600)
    assert [q.index for q in sample.qa] == list(range(len(sample.qa)))
    # frames are in time order within a scene, although the JSON is not
    ts = [f["timestamp"] for f in ds.frames if f["scene_token"] == ds.frames[0]["scene_token"]]
    assert ts == sorted(ts)
    # families: the templated questions of the sample are all classified
    fams = {q.family for i in range(len(ds)) for q in ds.data_list[i]["qa"]}
    assert "important_objects" in fams and "behavior" in fams


def test_qa_chunks_cover_every_question_once(synthetic_infos):
    path, root = synthetic_infos
    ds = BEVDriveDataset(path, PIPELINE, qa_mode="chunks", qa_per_sample=1)
    assert len(ds) == 4 * 2  # 4 frames x 2 questions, one question per item
    frame = BEVDriveDataset(path, PIPELINE, qa_mode="frame")
    assert len(frame) == 4 and all(len(e["qa"]) == 2 for e in frame.data_list)


def test_temporal_queue_respects_scene_boundaries(synthetic_infos):
    path, root = synthetic_infos
    ds = BEVDriveDataset(path, PIPELINE, qa_mode="frame", queue_length=3)
    tokens = [[ds.frames[i]["token"] for i in ds.queue_indices(k)] for k in range(4)]
    assert tokens == [["a0"], ["a0", "a1"], ["a0", "a1", "a2"], ["b0"]]
    s = ds[3]["data_samples"]  # single-frame scene: padded, only the last frame valid
    assert s.queue_valid.tolist() == [False, False, True]
    assert not any(bool(m.valid) for m in s.ego_motion[:2])
    s = ds[1]["data_samples"]
    assert s.queue_valid.tolist() == [False, True, True]
    assert bool(s.ego_motion[-1].valid) and float(s.ego_motion[-1].translation[0]) == -2.0
    assert ds[1]["inputs"]["imgs"].shape == (3, 6, 3, 18, 32)
    # ego2img of the resized images projects a point ahead into CAM_FRONT's image centre column
    p = s.ego2img[-1, 0] @ torch.tensor([10.0, 0.02, 1.51, 1.0])
    assert abs(float(p[0] / p[2]) - 816.3 * 32 / 1600) < 1e-3


def test_missing_image_names_file_and_fix(synthetic_infos):
    path, root = synthetic_infos
    os.remove(os.path.join(root, "samples", "CAM_BACK", "a1.jpg"))
    ds = BEVDriveDataset(path, PIPELINE, qa_mode="frame")
    with pytest.raises(FileNotFoundError, match=r"a1\.jpg.*frame a1 CAM_BACK.*Fix"):
        ds[1]


def test_truncated_jpeg_is_a_clear_error(synthetic_infos):
    path, root = synthetic_infos
    jpg = os.path.join(root, "samples", "CAM_FRONT", "a2.jpg")
    data = open(jpg, "rb").read()
    with open(jpg, "wb") as f:
        f.write(data[: len(data) // 2])
    ds = BEVDriveDataset(path, PIPELINE, qa_mode="frame")
    from bevlm.datasets.transforms import CorruptImageError
    with pytest.raises(CorruptImageError, match=r"a2\.jpg.*cannot decode.*Fix"):
        ds[2]


def test_missing_info_file_and_bad_qa_mode(tmp_path, synthetic_infos):
    with pytest.raises(FileNotFoundError, match="create_data"):
        BEVDriveDataset(str(tmp_path / "nope.pkl"), PIPELINE)
    with pytest.raises(ValueError, match="qa_mode"):
        BEVDriveDataset(synthetic_infos[0], PIPELINE, qa_mode="bogus")


def test_test_format_selection_and_stride(tmp_path):
    path = create_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES, str(tmp_path / "s.pkl"))
    ds = BEVDriveDataset(path, PIPELINE, qa_mode="frame", qa_select="test")
    assert sum(len(e["qa"]) for e in ds.data_list) == 66  # the official test format of the sample
    mc = [q for e in ds.data_list for q in e["qa"] if "Please select the correct answer" in q.question]
    assert len(mc) == 8 + 9 and all(q.answer in "ABCD" for q in mc)
    assert len(BEVDriveDataset(path, PIPELINE, qa_mode="frame", frame_stride=2)) == 5


def test_test_format_repeats_add_the_scored_questions(tmp_path):
    """Training chunks cover the whole graph once; test_format_repeats adds each frame's
    official test-format questions (MC forms included) as extra items."""
    path = create_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES, str(tmp_path / "s.pkl"))
    plain = BEVDriveDataset(path, PIPELINE, qa_mode="chunks", qa_per_sample=8)
    mixed = BEVDriveDataset(path, PIPELINE, qa_mode="chunks", qa_per_sample=8, test_format_repeats=2)
    test = BEVDriveDataset(path, PIPELINE, qa_mode="frame", qa_select="test")
    extra = [e for e in mixed.data_list if e not in plain.data_list]
    assert len(mixed) == len(plain) + 2 * len(test)
    per_frame = {e["frame"]: [(q.index, q.question, q.answer) for q in e["qa"]] for e in test.data_list}
    for e in extra:
        assert [(q.index, q.question, q.answer) for q in e["qa"]] == per_frame[e["frame"]]
    framed = BEVDriveDataset(path, PIPELINE, qa_mode="frame", test_format_repeats=2)  # per frame: ignored
    assert len(framed) == len(test)
    with pytest.raises(ValueError, match="test_format_repeats"):
        BEVDriveDataset(path, PIPELINE, qa_mode="chunks", test_format_repeats=-1)


def test_family_repeats_add_that_familys_questions(tmp_path):
    """family_repeats={f: r} adds, per frame that has questions of family f, r items holding exactly
    those questions (graph order); the chunks stay as they were; unknown families and negative
    counts are refused with the fix."""
    path = create_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES, str(tmp_path / "s.pkl"))
    plain = BEVDriveDataset(path, PIPELINE, qa_mode="chunks", qa_per_sample=8)
    framed = BEVDriveDataset(path, PIPELINE, qa_mode="frame")
    fam = "collision_actions"
    wanted = {e["frame"]: [(q.index, q.question) for q in e["qa"] if q.family == fam] for e in framed.data_list}
    with_fam = {fi: qs for fi, qs in wanted.items() if qs}
    assert with_fam, "the real DriveLM sample asks collision-action questions"
    more = BEVDriveDataset(path, PIPELINE, qa_mode="chunks", qa_per_sample=8, family_repeats={fam: 3})
    extra = [e for e in more.data_list if e not in plain.data_list]
    assert all(e in more.data_list for e in plain.data_list)  # the chunks stay
    assert len(more) == len(plain) + 3 * len(with_fam) and len(extra) == 3 * len(with_fam)
    for e in extra:
        assert [(q.index, q.question) for q in e["qa"]] == with_fam[e["frame"]]
    assert len(BEVDriveDataset(path, PIPELINE, qa_mode="chunks", family_repeats={fam: 0})) == len(plain)
    assert len(BEVDriveDataset(path, PIPELINE, qa_mode="frame", family_repeats={fam: 3})) == len(framed)
    with pytest.raises(ValueError, match="unknown question family 'collision'.*Fix"):
        BEVDriveDataset(path, PIPELINE, qa_mode="chunks", family_repeats={"collision": 2})
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        BEVDriveDataset(path, PIPELINE, qa_mode="chunks", family_repeats={fam: -1})
