import json

import pytest

from bevlm.datasets import DriveLMFormatError, load_drivelm, parse_ctags
from bevlm.datasets.drivelm_io import flatten_qa, resolve_image_path

from .conftest import SAMPLE_JSON


def _write(tmp_path, data):
    p = tmp_path / "qa.json"
    p.write_text(json.dumps(data))
    return str(p)


def _minimal():
    return {"s": {"scene_description": "", "key_frames": {"f": {
        "key_object_infos": {"<c1,CAM_FRONT,10.0,20.0>": {"Category": "Vehicle", "Status": "Moving",
                                                           "Visual_description": "Red car.",
                                                           "2d_bbox": [0, 0, 1, 1]}},
        "QA": {"perception": [{"Q": "q", "A": "a"}], "prediction": [], "planning": [], "behavior": []},
        "image_paths": {}}}}}


def test_sample_counts():
    data = load_drivelm(SAMPLE_JSON)
    frames = [f for s in data.values() for f in s["key_frames"].values()]
    assert len(frames) == 9
    assert sum(len(flatten_qa(f)) for f in frames) == 790


@pytest.mark.parametrize("path,key", [(("s", "key_frames", "f"), "QA"),
                                      (("s", "key_frames", "f", "key_object_infos",
                                        "<c1,CAM_FRONT,10.0,20.0>"), "2d_bbox")])
def test_missing_key_names_file_and_key(tmp_path, path, key):
    data = _minimal()
    node = data
    for k in path:
        node = node[k]
    del node[key]
    p = _write(tmp_path, data)
    with pytest.raises(DriveLMFormatError, match=rf"qa\.json.*missing key '{key}'.*Fix"):
        load_drivelm(p)


def test_missing_qa_field_and_bad_ctag(tmp_path):
    data = _minimal()
    del data["s"]["key_frames"]["f"]["QA"]["perception"][0]["A"]
    with pytest.raises(DriveLMFormatError, match=r"QA\.perception\[0\].*'A'"):
        load_drivelm(_write(tmp_path, data))
    data = _minimal()
    infos = data["s"]["key_frames"]["f"]["key_object_infos"]
    infos["<c1,FRONT,1,2>"] = infos.pop("<c1,CAM_FRONT,10.0,20.0>")
    with pytest.raises(DriveLMFormatError, match="malformed c-tag"):
        load_drivelm(_write(tmp_path, data))


def test_truncated_json(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(_minimal())[:50])
    with pytest.raises(DriveLMFormatError, match="invalid JSON.*truncated"):
        load_drivelm(str(p))


def test_ctags_and_paths():
    assert parse_ctags("a <c1,CAM_BACK,1088.3,497.5> b <c2,CAM_FRONT,-3,4.0>") == [
        (1, "CAM_BACK", 1088.3, 497.5), (2, "CAM_FRONT", -3.0, 4.0)]
    assert resolve_image_path("../nuscenes/samples/CAM_FRONT/x.jpg", "/d") == "/d/samples/CAM_FRONT/x.jpg"
