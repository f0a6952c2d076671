"""Fixtures: tiny synthetic info files with real JPEGs on disk (no world generation needed)."""
import os

import numpy as np
import pytest
from PIL import Image

from bevlm.datasets.converters import write_pickle_atomic
from bevlm.structures import CAMERA_NAMES, nominal_rig

from tests.paths import DRIVELM_SAMPLE_IMAGES as SAMPLE_IMAGES, DRIVELM_SAMPLE_JSON as SAMPLE_JSON  # noqa: F401


def _frame(token, scene, idx, prev, nxt, root, size=(32, 18)):
    rig = nominal_rig(size)
    images = {}
    for c, cam in enumerate(CAMERA_NAMES):
        rel = f"samples/{cam}/{token}.jpg"
        os.makedirs(os.path.join(root, "samples", cam), exist_ok=True)
        Image.fromarray(np.full((size[1], size[0], 3), 10 * c + idx, np.uint8)).save(os.path.join(root, rel))
        images[cam] = {"img_path": rel, "cam2img": rig[cam]["cam2img"].tolist(),
                       "cam2ego": rig[cam]["cam2ego"].tolist(), "lidar2cam": np.eye(4).tolist(),
                       "height": size[1], "width": size[0], "timestamp": idx * 0.5, "sample_data_token": ""}
    motion = np.eye(4)
    motion[0, 3] = -2.0  # previous ego origin 2 m behind
    qa = {"perception": [{"Q": f"What is the observed status of object <c1,CAM_FRONT,10.0,9.0>?",
                          "A": "Moving."}],
          "prediction": [], "planning": [],
          "behavior": [{"Q": "Predict the behavior of the ego vehicle.",
                        "A": "The ego vehicle is going straight. The ego vehicle is driving slowly."}]}
    return {"token": token, "scene_token": scene, "scene_name": scene, "timestamp": idx * 0.5,
            "frame_idx": idx, "prev": prev, "next": nxt, "ego2global": np.eye(4).tolist(),
            "prev2curr": motion.tolist() if prev else None, "images": images, "instances": [],
            "ego_fut_traj": np.zeros((6, 2)).tolist(), "ego_fut_mask": [1.0] * 6, "ego_status": [0.0] * 5,
            "nominal_rig": True, "drivelm": {"key_object_infos": {}, "QA": qa, "image_paths": {},
                                             "scene_description": ""}}


@pytest.fixture()
def synthetic_infos(tmp_path):
    """Scene A: frames a0 -> a1 -> a2; scene B: one frame b0 (a single-frame scene)."""
    root = str(tmp_path)
    frames = [_frame("a0", "A", 0, "", "a1", root), _frame("a1", "A", 1, "a0", "a2", root),
              _frame("a2", "A", 2, "a1", "", root), _frame("b0", "B", 0, "", "", root)]
    for i, f in enumerate(frames):
        f["sample_idx"] = i
    path = os.path.join(root, "infos.pkl")
    write_pickle_atomic({"metainfo": {"classes": ("car",), "data_root": root}, "data_list": frames}, path)
    return path, root


PIPELINE = [dict(type="LoadMultiViewImages"), dict(type="ResizeMultiViewImages", size=(32, 18)),
            dict(type="PackDriveInputs")]
