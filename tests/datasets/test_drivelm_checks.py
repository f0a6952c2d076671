"""DriveLM input checks: nothing wrong converts silently (errors name file, frame, key and fix)."""
import json
import os
import shutil

import pytest

from bevlm.datasets import DriveLMFormatError, load_drivelm
from bevlm.datasets.converters import create_drivelm_only_infos
from bevlm.datasets.drivelm_io import resolve_image_path
from bevlm.utils import load_plain_pickle

from .conftest import SAMPLE_IMAGES, SAMPLE_JSON


def _frame(q="What is <c1,CAM_FRONT,10.0,20.0> doing?", a="Moving.", qa=None):
    return {"key_object_infos": {"<c1,CAM_FRONT,10.0,20.0>": {"Category": "Vehicle", "Status": "Moving",
                                                               "Visual_description": "Red car.",
                                                               "2d_bbox": [0, 0, 1, 1]}},
            "QA": qa if qa is not None else {"perception": [{"Q": q, "A": a}], "prediction": [],
                                             "planning": [], "behavior": []},
            "image_paths": {}}


def _write(tmp_path, frames):
    p = tmp_path / "qa.json"
    p.write_text(json.dumps({"s": {"scene_description": "", "key_frames": frames}}))
    return str(p)


@pytest.mark.parametrize("frame,match", [
    (_frame(q="Is <c1,CAM_FRONT,abc> moving?"), r"QA\.perception\[0\]\.Q.*malformed c-tag '<c1,CAM_FRONT,abc>'"),
    (_frame(a="It is <c2,CAM_TOP,5.0,5.0>."), r"QA\.perception\[0\]\.A.*names camera 'CAM_TOP'.*CAM_FRONT"),
    (_frame(q="Where is <c1,CAM_FRONT,-5.0,3.0>?"), r"QA\.perception\[0\]\.Q.*negative pixel coordinate"),
    (_frame(q=None), r"QA\.perception\[0\]\.Q: expected a string, got NoneType"),
    (_frame(a=3), r"QA\.perception\[0\]\.A: expected a string, got int"),
    (_frame(qa={}), r"QA: no question / answer pair.*--skip-bad"),
    (_frame(qa=[{"Q": "q", "A": "a"}]), r"QA: expected an object \{stage: \[QA\]\}, got list"),
])
def test_bad_frame_is_rejected_with_file_frame_and_key(tmp_path, frame, match):
    path = _write(tmp_path, {"f": frame})
    with pytest.raises(DriveLMFormatError, match=r"qa\.json: scene s / frame f / .*" + match):
        load_drivelm(path)


def test_skip_bad_drops_bad_frames_and_keeps_good_ones(tmp_path):
    path = _write(tmp_path, {"good": _frame(), "empty": _frame(qa={}), "tag": _frame(q="<c1,CAM_TOP,1,1>?")})
    data = load_drivelm(path, skip_bad=True)
    assert list(data["s"]["key_frames"]) == ["good"]
    only_bad = _write(tmp_path, {"empty": _frame(qa={})})
    assert load_drivelm(only_bad, skip_bad=True) == {}  # a scene left without frames goes too


def test_image_path_may_not_leave_the_image_root(tmp_path):
    root = str(tmp_path / "root")
    assert resolve_image_path("../nuscenes/samples/CAM_FRONT/x.jpg", root) == os.path.join(root, "samples/CAM_FRONT/x.jpg")
    with pytest.raises(DriveLMFormatError, match="outside the image root"):
        resolve_image_path("../nuscenes/samples/../../secret.jpg", root)


def _sample_copy(tmp_path, edit):
    """The real DriveLM sample with its images, one frame edited by ``edit(frame, images_dir)``."""
    images = tmp_path / "nuscenes"
    shutil.copytree(SAMPLE_IMAGES, images)
    data = json.load(open(SAMPLE_JSON, encoding="utf-8"))
    scene = next(iter(data.values()))
    token = next(iter(scene["key_frames"]))
    edit(scene["key_frames"][token], images)
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(data))
    return str(path), str(images), token


def test_ctag_outside_the_image_and_corrupt_image_are_rejected_or_skipped(tmp_path):
    def outside(frame, images):  # real images are 1600 x 900
        frame["QA"]["perception"][0]["Q"] += " <c9,CAM_BACK,1700.0,100.0>"

    json_path, images, token = _sample_copy(tmp_path / "a", outside)
    with pytest.raises(DriveLMFormatError, match=rf"frame {token} / QA\.perception\[0\]\.Q.*outside the 1600x900 image of CAM_BACK"):
        create_drivelm_only_infos(json_path, images, str(tmp_path / "a.pkl"))
    assert not (tmp_path / "a.pkl").exists()
    out = create_drivelm_only_infos(json_path, images, str(tmp_path / "a.pkl"), skip_bad=True)
    kept = load_plain_pickle(out)
    assert len(kept["data_list"]) == 8 and token not in {f["token"] for f in kept["data_list"]}
    assert kept["metainfo"]["num_qa_frames"] == 8

    def corrupt(frame, images):
        rel = frame["image_paths"]["CAM_FRONT"]
        path = resolve_image_path(rel, str(images))
        with open(path, "r+b") as f:  # a truncated JPEG: the header opens, the decode fails
            f.truncate(2000)

    json_path, images, token = _sample_copy(tmp_path / "b", corrupt)
    with pytest.raises(DriveLMFormatError, match=rf"frame {token} CAM_FRONT: image .* cannot be decoded"):
        create_drivelm_only_infos(json_path, images, str(tmp_path / "b.pkl"))
