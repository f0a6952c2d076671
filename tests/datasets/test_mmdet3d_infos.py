"""Info files in mmdet3d 1.4's nuScenes layout (tools/create_data.py mmdet3d).

The reference is nuscenes-devkit itself: mmdet3d's converter takes the boxes of
``NuScenes.get_sample_data(LIDAR_TOP)`` (the LiDAR frame), their ``wlh`` reordered to l, w, h and
``yaw_pitch_roll[0]``, and rotates the global velocity into the LiDAR frame. The world here mounts
LIDAR_TOP as on the nuScenes cars (rotated -90 deg about z, 0.94 m ahead, 1.84 m up), so a frame
mix-up cannot pass.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bevlm.datasets.converters.mmdet3d_infos import (MMDET3D_CLASSES, InfoConversionError, box_ego_to_lidar,
                                                     convert_infos, create_mmdet3d_infos)
from bevlm.utils import load_plain_pickle
from tests.conftest import REPO, make_world


@pytest.fixture(scope="module")
def lidar_world(tmp_path_factory):
    out = make_world(str(tmp_path_factory.mktemp("lidar_world")), num_scenes=2, frames=3, image_size=(64, 36),
                     lidar_extrinsic="nuscenes")
    infos = {split: f"{out}/infos/bevlm_infos_{split}.pkl" for split in ("train", "val")}
    return out, infos


def test_boxes_and_velocities_match_the_devkit_in_the_lidar_frame(lidar_world):
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.nuscenes import NuScenes
    from pyquaternion import Quaternion

    out, infos = lidar_world
    nusc = NuScenes("v1.0-mini", dataroot=out, verbose=False)
    checked = 0
    for split, path in infos.items():
        converted = convert_infos(load_plain_pickle(path), path)
        assert converted["metainfo"]["info_version"] == "1.1"
        assert converted["metainfo"]["categories"]["car"] == 0 and converted["metainfo"]["categories"]["barrier"] == 9
        for frame in converted["data_list"]:
            sample = nusc.get("sample", frame["token"])
            sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            assert frame["lidar_points"]["lidar_path"] == os.path.basename(sd["filename"])
            np.testing.assert_allclose(np.asarray(frame["lidar_points"]["lidar2ego"])[:3, :3],
                                       Quaternion(cs["rotation"]).rotation_matrix, atol=1e-12)
            _, boxes, _ = nusc.get_sample_data(sd["token"])  # boxes in the LiDAR frame
            by_instance = {nusc.get("sample_annotation", b.token)["instance_token"]: b for b in boxes}
            l2e_r, e2g_r = Quaternion(cs["rotation"]).rotation_matrix, Quaternion(pose["rotation"]).rotation_matrix
            for inst in frame["instances"]:
                ref = by_instance[inst["instance_token"]]
                expected = [*ref.center, *ref.wlh[[1, 0, 2]], ref.orientation.yaw_pitch_roll[0]]
                np.testing.assert_allclose(inst["bbox_3d"][:6], expected[:6], atol=1e-6)
                assert abs(np.angle(np.exp(1j * (inst["bbox_3d"][6] - expected[6])))) < 1e-6
                velo = np.array([*np.nan_to_num(nusc.box_velocity(ref.token))[:2], 0.0])
                velo = velo @ np.linalg.inv(e2g_r).T @ np.linalg.inv(l2e_r).T  # mmdet3d's global -> LiDAR
                np.testing.assert_allclose(inst["velocity"], velo[:2], atol=1e-6)
                name = category_to_detection_name(ref.name)
                assert inst["bbox_label_3d"] == (MMDET3D_CLASSES.index(name) if name in MMDET3D_CLASSES else -1)
                assert inst["bbox_3d_isvalid"] == (inst["num_lidar_pts"] + inst["num_radar_pts"] > 0)
                checked += 1
    assert checked > 10
    # the LiDAR frame really differs from the ego frame here (x of the LiDAR = -y of the ego)
    ego = load_plain_pickle(infos["train"])["data_list"][0]["instances"][0]["bbox_3d"]
    lidar = convert_infos(load_plain_pickle(infos["train"]))["data_list"][0]["instances"][0]["bbox_3d"]
    assert abs(lidar[0] - ego[0]) > 0.5 or abs(lidar[1] - ego[1]) > 0.5


def test_ego_to_lidar_and_back_is_the_identity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        yaw_l = rng.uniform(-np.pi, np.pi)
        lidar2ego = np.eye(4)
        lidar2ego[:3, :3] = [[np.cos(yaw_l), -np.sin(yaw_l), 0], [np.sin(yaw_l), np.cos(yaw_l), 0], [0, 0, 1]]
        lidar2ego[:3, 3] = rng.normal(size=3)
        box = [*rng.normal(size=3) * 10, 4.0, 2.0, 1.5, rng.uniform(-np.pi, np.pi)]
        vel = rng.normal(size=2)
        lbox, lvel = box_ego_to_lidar(box, vel, lidar2ego)
        back = lidar2ego[:3, :3] @ np.asarray(lbox[:3]) + lidar2ego[:3, 3]
        np.testing.assert_allclose(back, box[:3], atol=1e-9)
        assert lbox[3:6] == box[3:6]
        assert abs(np.angle(np.exp(1j * (lbox[6] + yaw_l - box[6])))) < 1e-9
        np.testing.assert_allclose(lidar2ego[:2, :2] @ np.asarray(lvel), vel, atol=1e-9)


def test_a_frame_without_lidar_is_refused_with_the_fix(lidar_world, tmp_path):
    _, infos = lidar_world
    data = load_plain_pickle(infos["val"])
    del data["data_list"][1]["lidar_points"]
    with pytest.raises(InfoConversionError, match="no lidar_points.lidar2ego.*Fix: build the infos from a database "
                                                  "with a LIDAR_TOP sensor"):
        convert_infos(data, "x.pkl")
    with pytest.raises(InfoConversionError, match="is the input file"):
        create_mmdet3d_infos(infos["val"], infos["val"])


def test_create_data_tool_writes_named_files_and_keeps_existing_ones(lidar_world, tmp_path):
    _, infos = lidar_world
    cmd = [sys.executable, os.path.join(REPO, "tools", "create_data.py"), "mmdet3d", "--infos", infos["train"],
           infos["val"], "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    for split in ("train", "val"):
        out = load_plain_pickle(str(tmp_path / f"nuscenes_infos_{split}.pkl"))
        assert len(out["data_list"]) == len(load_plain_pickle(infos[split])["data_list"])
        assert [f["sample_idx"] for f in out["data_list"]] == list(range(len(out["data_list"])))
    before = (tmp_path / "nuscenes_infos_val.pkl").read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert again.returncode != 0 and "exists; pass --force" in again.stderr
    assert (tmp_path / "nuscenes_infos_val.pkl").read_bytes() == before


def test_mmdet3d_nuscenes_dataset_reads_the_infos(lidar_world, tmp_path):
    """With the optional extra installed (docs/real_data.md: mmcv with its compiled ops, mmdet,
    mmdet3d 1.4), mmdet3d's own NuScenesDataset and multi-view image loader read the files."""
    pytest.importorskip("mmdet3d", reason="optional extra: mmdet3d 1.4 with a compiled mmcv (docs/real_data.md)")
    from mmdet3d.datasets import NuScenesDataset
    from mmdet3d.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    out, infos = lidar_world
    create_mmdet3d_infos(infos["val"], str(tmp_path / "nuscenes_infos_val.pkl"))
    cams = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
    ds = NuScenesDataset(data_root=out, ann_file=str(tmp_path / "nuscenes_infos_val.pkl"),
                         data_prefix=dict(pts="samples/LIDAR_TOP", sweeps="sweeps/LIDAR_TOP",
                                          **{c: f"samples/{c}" for c in cams}),
                         modality=dict(use_camera=True, use_lidar=False), test_mode=False,
                         pipeline=[dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=6)],
                         box_type_3d="LiDAR", use_valid_flag=True)
    item = ds[0]
    assert len(item["img"]) == 6 and item["img"][0].shape[:2] == (36, 64)
    ours = load_plain_pickle(str(tmp_path / "nuscenes_infos_val.pkl"))["data_list"][0]["instances"]
    kept = [i for i in ours if i["bbox_3d_isvalid"] and i["bbox_label_3d"] >= 0]
    boxes = item["ann_info"]["gt_bboxes_3d"] if "ann_info" in item else ds.get_ann_info(0)["gt_bboxes_3d"]
    assert len(boxes) == len(kept)
    # gravity centre back from mmdet3d's bottom-centre boxes
    np.testing.assert_allclose(boxes.gravity_center.numpy(), [i["bbox_3d"][:3] for i in kept], atol=1e-4)
