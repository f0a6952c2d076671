"""Info files in mmdet3d 1.4's nuScenes conventions, from this project's info files.

This project's infos keep 3D boxes in the ego frame of the key frame (what the BEV grid is built
in). mmdet3d's nuScenes infos (``tools/create_data.py nuscenes`` of mmdet3d 1.x followed by its
``update_infos_to_v2``, ``info_version`` 1.1) keep them in the LiDAR frame. This converter writes
that layout so mmdet3d's ``NuScenesDataset`` and its transforms (e.g. ``LoadMultiViewImageFromFiles``)
read our data:

* ``metainfo``: ``categories`` {class: index} over mmdet3d's 10 nuScenes classes (classes outside
  them, here ``traffic_light``, map to -1 as mmdet3d's converter marks ignored names), ``dataset``
  ``'nuscenes'``, ``version``, ``info_version`` ``'1.1'``.
* per frame: ``sample_idx``, ``token``, ``timestamp`` (s), ``ego2global``, ``lidar_points``
  (``num_pts_feats`` 5, ``lidar_path`` file name under ``samples/LIDAR_TOP``, ``lidar2ego``),
  ``images[CAM]`` (``img_path`` file name under ``samples/CAM``, ``cam2img``, ``cam2ego``,
  ``lidar2cam``, ``sample_data_token``, ``timestamp``), ``instances``.
* per instance: ``bbox_3d`` [x, y, z, l, w, h, yaw] in the LiDAR frame with z at the box centre
  (mmdet3d's loader turns it into a bottom-centre ``LiDARInstance3DBoxes`` with
  ``origin=(0.5, 0.5, 0.5)``), ``bbox_label`` = ``bbox_label_3d`` (mmdet3d class index or -1),
  ``velocity`` [vx, vy] in the LiDAR frame, ``num_lidar_pts``, ``num_radar_pts``,
  ``bbox_3d_isvalid`` (some LiDAR or radar point in the box), plus ``instance_token``,
  ``category_name``, ``attr_name`` (ignored by mmdet3d).

The frame's other keys (scene token, DriveLM QA, ego future, ego status...) are kept: mmdet3d
ignores keys it does not know. Not written: LiDAR / camera sweeps and the per-camera 2D boxes
(``cam_instances``, used by mmdet3d's monocular pipelines only).
"""
from __future__ import annotations

import os

import numpy as np

from .geometry import yaw_of
from .nuscenes_infos import CLASSES

#: mmdet3d's nuScenes detection classes, in its order (``NuScenesDataset.METAINFO['classes']``).
MMDET3D_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                   "pedestrian", "traffic_cone", "barrier")
#: Point features of nuScenes LiDAR files (x, y, z, intensity, ring index).
LIDAR_POINT_FEATURES = 5


class InfoConversionError(ValueError):
    """An info file cannot be written in mmdet3d's layout (the message names the file, frame and key)."""


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box_ego_to_lidar(bbox_3d, velocity, lidar2ego: np.ndarray) -> tuple[list[float], list[float]]:
    """An ego-frame box ``[x, y, z, l, w, h, yaw]`` and velocity ``[vx, vy]`` in the LiDAR frame.

    The box is taken as level in the ego frame (rotation about z by ``yaw``), as this project's
    infos store it; velocity as ``[vx, vy, 0]`` (mmdet3d's converter does the same with the global
    velocity).
    """
    rot, trans = lidar2ego[:3, :3], lidar2ego[:3, 3]
    center = rot.T @ (np.asarray(bbox_3d[:3], dtype=np.float64) - trans)
    yaw = yaw_of(rot.T @ _rot_z(float(bbox_3d[6])))
    vel = rot.T @ np.array([float(velocity[0]), float(velocity[1]), 0.0])
    return [*center.tolist(), *[float(v) for v in bbox_3d[3:6]], yaw], vel[:2].tolist()


def _file_name(path: str, channel: str, where: str) -> str:
    """mmdet3d keeps file names and a ``data_prefix`` per channel (``samples/<channel>``)."""
    folder, name = os.path.split(path)
    if os.path.normpath(folder) != os.path.join("samples", channel):
        raise InfoConversionError(f"{where}: {path!r} is not under samples/{channel}/; mmdet3d's nuScenes infos "
                                  f"name files relative to data_prefix samples/{channel}. Fix: key frames only "
                                  "(sweeps are not converted)")
    return name


def convert_frame(info: dict, sample_idx: int, where: str = "info") -> dict:
    """One frame of this project's infos in mmdet3d's nuScenes layout (see the module docstring).

    Raises:
        InfoConversionError: the frame has no ``lidar_points.lidar2ego`` (mmdet3d's boxes live in the
            LiDAR frame), or a file is not a key-frame file.
    """
    where = f"{where}: frame {info.get('token', sample_idx)!r}"
    lidar = info.get("lidar_points") or {}
    if "lidar2ego" not in lidar:
        raise InfoConversionError(f"{where} has no lidar_points.lidar2ego: mmdet3d's nuScenes infos keep boxes in "
                                  "the LiDAR frame. Fix: build the infos from a database with a LIDAR_TOP sensor")
    lidar2ego = np.asarray(lidar["lidar2ego"], dtype=np.float64)
    out = {k: v for k, v in info.items() if k not in ("images", "lidar_points", "instances", "sample_idx")}
    out.update(sample_idx=sample_idx, token=info["token"], timestamp=info["timestamp"], ego2global=info["ego2global"])
    out["lidar_points"] = {"num_pts_feats": LIDAR_POINT_FEATURES,
                           "lidar_path": _file_name(lidar["lidar_path"], "LIDAR_TOP", where),
                           "lidar2ego": lidar2ego.tolist()}
    out["images"] = {}
    for cam, img in info["images"].items():
        out["images"][cam] = {"img_path": _file_name(img["img_path"], cam, where), "cam2img": img["cam2img"],
                              "cam2ego": img["cam2ego"], "lidar2cam": img["lidar2cam"],
                              "sample_data_token": img["sample_data_token"], "timestamp": img["timestamp"],
                              "height": img["height"], "width": img["width"]}
    out["instances"] = []
    for inst in info.get("instances", []):
        name = CLASSES[inst["bbox_label_3d"]]
        label = MMDET3D_CLASSES.index(name) if name in MMDET3D_CLASSES else -1
        box, vel = box_ego_to_lidar(inst["bbox_3d"], inst["velocity"], lidar2ego)
        n_lidar, n_radar = int(inst.get("num_lidar_pts", 0)), int(inst.get("num_radar_pts", 0))
        out["instances"].append({
            "bbox_3d": box, "bbox_label": label, "bbox_label_3d": label, "velocity": vel,
            "num_lidar_pts": n_lidar, "num_radar_pts": n_radar, "bbox_3d_isvalid": n_lidar + n_radar > 0,
            "instance_token": inst.get("instance_token", ""), "category_name": inst.get("category_name", ""),
            "attr_name": inst.get("attr_name", "")})
    return out


def convert_infos(infos: dict, source: str = "info file") -> dict:
    """This project's info file (``{"metainfo", "data_list"}``) in mmdet3d's nuScenes layout."""
    meta = infos.get("metainfo") or {}
    categories = {name: i for i, name in enumerate(MMDET3D_CLASSES)}
    categories.update({name: -1 for name in CLASSES if name not in MMDET3D_CLASSES})
    metainfo = {"categories": categories, "dataset": "nuscenes", "version": meta.get("version", ""),
                "info_version": "1.1"}
    for key in ("domain", "num_qa_frames"):
        if key in meta:
            metainfo[key] = meta[key]
    return {"metainfo": metainfo,
            "data_list": [convert_frame(info, i, source) for i, info in enumerate(infos["data_list"])]}


def create_mmdet3d_infos(src: str, out: str) -> dict:
    """Read ``src`` (this project's info file), write its mmdet3d form to ``out``.

    The input is read with the plain-data loader (no code runs); the output is written as plain data,
    atomically. ``out`` may not be ``src``.

    Returns:
        the converted infos.
    """
    from bevlm.utils import dump_plain_pickle, load_plain_pickle

    if os.path.abspath(src) == os.path.abspath(out):
        raise InfoConversionError(f"{out} is the input file; write the mmdet3d infos to another path")
    infos = load_plain_pickle(src)
    if not isinstance(infos, dict) or "data_list" not in infos:
        raise InfoConversionError(f"{src}: not an info file ({{'metainfo', 'data_list'}} expected). Fix: make it "
                                  "with tools/create_data.py world / nuscenes")
    converted = convert_infos(infos, src)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    dump_plain_pickle(converted, out)
    return converted
