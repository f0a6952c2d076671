"""The generated world is a valid nuScenes database whose boxes reproduce the DriveLM c-tags."""
import json
import os
import re

import numpy as np
import pytest
from nuscenes.utils.geometry_utils import BoxVisibility, view_points
from PIL import Image

from bevlm.structures import CAMERA_NAMES
from bevlm.world import WorldConfig, behavior_universe, generate_world
from tests.world.conftest import load_world

CTAG = re.compile(r"<c\d+,CAM_[A-Z_]+,-?\d+(?:\.\d+)?,-?\d+(?:\.\d+)?>")
CTAG_PARTS = re.compile(r"<c(\d+),(CAM_[A-Z_]+),(-?\d+\.\d),(-?\d+\.\d)>")


def _frames(world):
    for scene in world["drivelm"].values():
        for tok, fr in scene["key_frames"].items():
            yield tok, fr


def test_devkit_loads_and_counts_match(world, nusc):
    s = world["summary"]
    assert len(nusc.scene) == 2 and len(nusc.sample) == s["frames"] == 16
    assert len(nusc.sample_annotation) == s["annotations"] > 0
    assert len(nusc.sample_data) == 16 * 7 and len(nusc.ego_pose) == 16 * 7
    for sample in nusc.sample:
        assert set(sample["data"]) == set(CAMERA_NAMES) | {"LIDAR_TOP"}
        assert sample["anns"], "every key frame has annotations"
    ts = sorted(x["timestamp"] for x in nusc.sample if x["scene_token"] == nusc.scene[0]["token"])
    assert set(np.diff(ts)) == {500000}
    cats = {c["name"] for c in nusc.category}
    assert {"vehicle.car", "human.pedestrian.adult", "static_object.traffic_light"} <= cats
    # the map mask loads and the ego stands on drivable ground
    log = nusc.get("log", nusc.scene[0]["log_token"])
    mask = nusc.get("map", log["map_token"])["mask"]
    pose = nusc.get("ego_pose", nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])["ego_pose_token"])
    assert mask.is_on_mask(pose["translation"][0], pose["translation"][1])[0]


def test_every_camera_file_decodes_at_image_size(world, nusc):
    W, H = world["config"].image_size
    for sd in nusc.sample_data:
        path = os.path.join(world["root"], sd["filename"])
        assert os.path.isfile(path)
        if sd["fileformat"] == "jpg":
            with Image.open(path) as im:
                assert im.size == (W, H) and (sd["width"], sd["height"]) == (W, H)
    leftovers = [f for r, _, fs in os.walk(world["root"]) for f in fs if ".tmp" in f]
    assert not leftovers


def test_ctags_reproduced_by_devkit_boxes(world, nusc):
    assert _check_ctags(world, nusc) >= 16


def _check_ctags(world, nusc) -> int:
    """Every key object's c-tag is the devkit's projection of its box centre (within 1 px, using the
    stored calibration) and lies in its 2D box; returns the number of c-tags checked."""
    n = 0
    for tok, fr in _frames(world):
        sample = nusc.get("sample", tok)
        for tag, info in fr["key_object_infos"].items():
            idx, cam, x, y = CTAG_PARTS.fullmatch(tag).groups()
            ann = world["gt"][tok]["key_objects"][tag]["ann"]
            _, boxes, K = nusc.get_sample_data(sample["data"][cam], box_vis_level=BoxVisibility.NONE,
                                               selected_anntokens=[ann])
            uv = view_points(boxes[0].center[:, None], K, normalize=True)[:2, 0]
            assert abs(uv[0] - float(x)) <= 1.0 and abs(uv[1] - float(y)) <= 1.0, (tag, uv)
            x0, y0, x1, y1 = info["2d_bbox"]
            assert x0 <= float(x) <= x1 and y0 <= float(y) <= y1
            n += 1
    return n


def test_ctag_regex_and_behavior_universe(world):
    universe = set(behavior_universe())
    assert len(universe) == 21
    for tok, fr in _frames(world):
        keys = list(fr["key_object_infos"])
        assert 1 <= len(keys) <= 5 and all(CTAG.fullmatch(k) for k in keys)
        assert list(fr) == ["key_object_infos", "QA", "image_paths"]
        assert fr["QA"]["perception"][0]["Q"].startswith("What are the important objects")
        for stage in fr["QA"].values():
            for qa in stage:
                assert set(qa) == {"Q", "A", "C", "con_up", "con_down", "cluster", "layer"}
                for t in CTAG.findall(qa["Q"] + qa["A"]):
                    assert t in keys
        for qa in fr["QA"]["behavior"]:
            assert qa["A"] in universe
        first = fr["QA"]["perception"][0]["A"]
        assert all(k in first for k in keys)
        notice = [qa for qa in fr["QA"]["prediction"] if all(k in qa["A"] for k in keys)]
        assert notice, "one prediction answer names every c-tag (official tag 3)"


def test_key_objects_are_visible(world, nusc):
    for tok, fr in _frames(world):
        for tag, info in world["gt"][tok]["key_objects"].items():
            assert info["visible_fraction"] >= 0.5
            ann = nusc.get("sample_annotation", info["ann"])
            assert ann["num_lidar_pts"] > 0


def _small(root, seed, **kw):
    cfg = WorldConfig(frames_per_scene=2, image_size=(96, 54), **kw)
    generate_world(root, num_scenes=1, seed=seed, config=cfg, progress=False)
    with open(os.path.join(root, "drivelm_train.json"), "rb") as f:
        qa = f.read()
    cam_dir = os.path.join(root, "samples", "CAM_FRONT")
    with open(os.path.join(cam_dir, sorted(os.listdir(cam_dir))[0]), "rb") as f:
        img = f.read()
    return qa, img


def test_determinism(tmp_path):
    a = _small(str(tmp_path / "a"), 5)
    b = _small(str(tmp_path / "b"), 5)
    c = _small(str(tmp_path / "c"), 6)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_options_left_traffic_and_night(tmp_path):
    from nuscenes.nuscenes import NuScenes

    for kw in ({"traffic_side": "left"}, {"lighting": "night"}):
        root = str(tmp_path / next(iter(kw.values())))
        _small(root, 1, **kw)
        nusc = NuScenes("v1.0-mini", root, verbose=False)
        assert len(nusc.sample) == 2
        img = np.asarray(Image.open(os.path.join(root, nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
                                                 ["filename"])))
        if "lighting" in kw:
            assert img.mean() < 60, "night images are dark"
        with open(os.path.join(root, "world_summary.json")) as f:
            assert json.load(f)["config"] == {**vars(WorldConfig(frames_per_scene=2, image_size=(96, 54), **kw)),
                                              "image_size": [96, 54]}


def test_option_camera_rig_is_stored_and_reproduces_ctags(tmp_path):
    """The 'wide-high' rig (a third domain): calibration records it (cameras 0.6 m higher, 0.7x
    focal length) and the devkit, reading that calibration, reproduces every c-tag."""
    from nuscenes.nuscenes import NuScenes

    from bevlm.structures import nominal_rig

    root = str(tmp_path / "wide_high")
    cfg = WorldConfig(frames_per_scene=4, image_size=(160, 90), rig="wide-high")
    summary = generate_world(root, num_scenes=2, seed=3, config=cfg, progress=False)
    nusc = NuScenes("v1.0-mini", root, verbose=False)
    nominal = nominal_rig((1600, 900))
    for cs in nusc.calibrated_sensor:
        name = nusc.get("sensor", cs["sensor_token"])["channel"]
        if name == "LIDAR_TOP":
            continue
        assert abs(cs["translation"][2] - (nominal[name]["cam2ego"][2, 3] + 0.6)) < 1e-6
        fx = np.asarray(cs["camera_intrinsic"])[0, 0]
        assert abs(fx - 0.7 * nominal[name]["cam2img"][0, 0] * 160 / 1600) < 1e-6
    assert _check_ctags(load_world(root, summary, cfg), nusc) > 0
    with pytest.raises(ValueError, match="WorldConfig.rig"):
        WorldConfig(rig="fisheye").validate()
