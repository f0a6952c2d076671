"""Build info files (mmdet3d v2 layout) from a nuScenes-format database + DriveLM QA.

Works on real nuScenes (any version) and on the generated mini world, through the real
``nuscenes-devkit``. The output is a pickle ``{"metainfo": ..., "data_list": [...]}``; each
entry of ``data_list`` is one key frame:

* ``token, scene_token, scene_name, timestamp (s), frame_idx, prev, next`` (sample tokens, '' at ends)
* ``ego2global`` 4x4; ``prev2curr`` 4x4 ego motion from the previous key frame (None at a scene start)
* ``images[CAM]``: ``img_path`` (relative to the data root), ``cam2img`` 3x3, ``cam2ego`` 4x4,
  ``lidar2cam`` 4x4, ``height``, ``width``, ``timestamp``, ``sample_data_token``
* ``lidar_points``: ``lidar_path``, ``lidar2ego`` (when a LIDAR_TOP sensor exists)
* ``instances``: ``bbox_3d`` [x, y, z, l, w, h, yaw] in the EGO frame of the key frame, ``velocity``
  [vx, vy] (ego frame), ``bbox_label_3d``, ``category_name``, ``attr_name``, ``instance_token``,
  ``num_lidar_pts``, ``num_radar_pts``, ``visibility``, ``fut_boxes`` 6 x [x, y, l, w, yaw] (NaN where the track ends)
* ``ego_fut_traj`` 6 x [x, y] future ego positions (0.5 s steps) in the current ego frame,
  ``ego_fut_mask`` 6 x {0, 1}; ``ego_status`` [vx, vy, ax, ay, yaw_rate] (ego frame, SI units)
* ``drivelm``: the DriveLM frame dict (+ ``scene_description``) or None

All cameras are expressed relative to the ego pose of the reference sensor (LIDAR_TOP if present,
else CAM_FRONT), so per-camera timestamp offsets of real nuScenes are compensated exactly.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from bevlm.structures import CAMERA_NAMES
from bevlm.utils import dump_plain_pickle
from ..drivelm_io import DriveLMFormatError, check_ctag_bounds, iter_frames, load_drivelm, load_drivelm_questions
from .geometry import to_frame, transform_matrix, yaw_of

logger = logging.getLogger(__name__)

#: Class names of ``bbox_label_3d`` (the 10 nuScenes detection classes + traffic lights).
CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle",
           "bicycle", "pedestrian", "traffic_cone", "traffic_light")
FUTURE_STEPS = 6  # 3 s at 2 Hz


def category_to_class(category_name: str) -> str | None:
    """nuScenes category -> detection class name (None when the category is ignored)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    if category_name.startswith("static_object.traffic_light"):
        return "traffic_light"
    return category_to_detection_name(category_name)


def write_pickle_atomic(obj, path: str) -> None:
    """Write an info file: plain data only, temp file + rename (never half-written); it loads with
    :func:`bevlm.utils.load_plain_pickle`, which runs no code."""
    dump_plain_pickle(obj, path)


class NuScenesInfoBuilder:
    """Turn samples of a ``NuScenes`` database into info dicts.

    Args:
        nusc: a loaded ``nuscenes.nuscenes.NuScenes``.
    """

    def __init__(self, nusc) -> None:
        self.nusc = nusc
        self.ref_channel = "LIDAR_TOP" if self._has_channel("LIDAR_TOP") else "CAM_FRONT"

    def _has_channel(self, channel: str) -> bool:
        return any(s["channel"] == channel for s in self.nusc.sensor)

    def _ego_pose(self, sd_token: str) -> np.ndarray:
        sd = self.nusc.get("sample_data", sd_token)
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return transform_matrix(pose["translation"], pose["rotation"])

    def sample_ego2global(self, sample: dict) -> np.ndarray:
        return self._ego_pose(sample["data"][self.ref_channel])

    def build(self, sample_token: str, frame_idx: int) -> dict:
        """Info dict of one key frame (see the module docstring)."""
        nusc = self.nusc
        sample = nusc.get("sample", sample_token)
        scene = nusc.get("scene", sample["scene_token"])
        ego2global = self.sample_ego2global(sample)
        info = {
            "token": sample_token, "scene_token": sample["scene_token"], "scene_name": scene["name"],
            "timestamp": sample["timestamp"] / 1e6, "frame_idx": frame_idx,
            "prev": sample["prev"], "next": sample["next"], "ego2global": ego2global.tolist(),
            "prev2curr": None, "images": {}, "nominal_rig": False,
        }
        if sample["prev"]:
            prev_pose = self.sample_ego2global(nusc.get("sample", sample["prev"]))
            info["prev2curr"] = (np.linalg.inv(ego2global) @ prev_pose).tolist()
        lidar2ego = np.eye(4)
        if "LIDAR_TOP" in sample["data"]:
            sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            lidar2ego = transform_matrix(cs["translation"], cs["rotation"])
            info["lidar_points"] = {"lidar_path": sd["filename"], "lidar2ego": lidar2ego.tolist()}
        for cam in CAMERA_NAMES:
            if cam not in sample["data"]:
                raise KeyError(f"{nusc.dataroot}: sample {sample_token} has no {cam} sample_data. "
                               f"Fix: every key frame needs the 6 cameras {CAMERA_NAMES}")
            sd = nusc.get("sample_data", sample["data"][cam])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            cam2camego = transform_matrix(cs["translation"], cs["rotation"])
            # camera pose at its own timestamp, expressed in the reference ego frame
            cam2ego = np.linalg.inv(ego2global) @ self._ego_pose(sd["token"]) @ cam2camego
            info["images"][cam] = {
                "img_path": sd["filename"], "cam2img": np.asarray(cs["camera_intrinsic"]).tolist(),
                "cam2ego": cam2ego.tolist(),
                "lidar2cam": (np.linalg.inv(cam2ego) @ lidar2ego).tolist(),
                "height": sd["height"], "width": sd["width"], "timestamp": sd["timestamp"] / 1e6,
                "sample_data_token": sd["token"],
            }
        info["instances"] = self._instances(sample, ego2global)
        info.update(self._ego_future_and_status(sample, ego2global))
        return info

    def _box_in_ego(self, ann: dict, ego2global: np.ndarray) -> tuple[list, float]:
        center = to_frame(np.asarray(ann["translation"]), ego2global)
        rot = np.linalg.inv(ego2global)[:3, :3] @ transform_matrix([0, 0, 0], ann["rotation"])[:3, :3]
        w, l, h = ann["size"]
        return [*center.tolist(), l, w, h], yaw_of(rot)

    def _instances(self, sample: dict, ego2global: np.ndarray) -> list[dict]:
        nusc = self.nusc
        out = []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            cls = category_to_class(ann["category_name"])
            if cls is None:
                continue
            box, yaw = self._box_in_ego(ann, ego2global)
            vel_global = nusc.box_velocity(ann_token)
            vel_global = np.nan_to_num(vel_global, nan=0.0)
            vel = np.linalg.inv(ego2global)[:3, :3] @ vel_global
            attrs = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
            fut = np.full((FUTURE_STEPS, 5), np.nan)
            nxt = ann["next"]
            for k in range(FUTURE_STEPS):
                if not nxt:
                    break
                fann = nusc.get("sample_annotation", nxt)
                fbox, fyaw = self._box_in_ego(fann, ego2global)
                fut[k] = [fbox[0], fbox[1], fbox[3], fbox[4], fyaw]
                nxt = fann["next"]
            out.append({
                "bbox_3d": box + [yaw], "bbox_label_3d": CLASSES.index(cls),
                "velocity": vel[:2].tolist(), "category_name": ann["category_name"],
                "attr_name": attrs[0] if attrs else "", "instance_token": ann["instance_token"],
                "num_lidar_pts": ann.get("num_lidar_pts", 0), "num_radar_pts": ann.get("num_radar_pts", 0),
                "visibility": ann.get("visibility_token", ""), "fut_boxes": fut.tolist(),
            })
        return out

    def _ego_future_and_status(self, sample: dict, ego2global: np.ndarray) -> dict:
        nusc = self.nusc
        traj = np.zeros((FUTURE_STEPS, 2))
        mask = np.zeros(FUTURE_STEPS)
        nxt = sample["next"]
        for k in range(FUTURE_STEPS):
            if not nxt:
                break
            fsample = nusc.get("sample", nxt)
            traj[k] = to_frame(self.sample_ego2global(fsample)[:3, 3], ego2global)[:2]
            mask[k] = 1
            nxt = fsample["next"]
        return {"ego_fut_traj": traj.tolist(), "ego_fut_mask": mask.tolist(),
                "ego_status": self._ego_status(sample, ego2global)}

    def _ego_status(self, sample: dict, ego2global: np.ndarray) -> list[float]:
        """[vx, vy, ax, ay, yaw_rate] in the current ego frame, by finite differences of key frames."""
        nusc = self.nusc

        def rel(tok):  # pose of a neighbour key frame in the current ego frame, and dt
            s = nusc.get("sample", tok)
            m = np.linalg.inv(ego2global) @ self.sample_ego2global(s)
            return m, (s["timestamp"] - sample["timestamp"]) / 1e6

        # Backward differences when a previous frame exists (causal: no future leaks into
        # the ego status); forward differences on the first frame of a scene.
        vel_prev = vel_next = np.zeros(2)
        yaw_prev = yaw_next = 0.0
        dt_prev = dt_next = None
        if sample["prev"]:
            m, dt_prev = rel(sample["prev"])  # dt_prev < 0
            vel_prev = m[:2, 3] / dt_prev
            yaw_prev = yaw_of(m[:3, :3]) / dt_prev
        if sample["next"]:
            m, dt_next = rel(sample["next"])
            vel_next = m[:2, 3] / dt_next
            yaw_next = yaw_of(m[:3, :3]) / dt_next
        if dt_prev is None:
            return [float(vel_next[0]), float(vel_next[1]), 0.0, 0.0, float(yaw_next)]
        acc = np.zeros(2)
        prev_tok = self.nusc.get("sample", sample["prev"])["prev"]
        if prev_tok:  # velocity one interval earlier -> causal acceleration
            m_prev, _ = rel(sample["prev"])
            m2, dt2 = rel(prev_tok)
            vel_earlier = (m_prev[:2, 3] - m2[:2, 3]) / (dt_prev - dt2)
            acc = (vel_prev - vel_earlier) / (-dt2 / 2.0)  # the two velocities' midpoints are -dt2/2 apart
        return [float(vel_prev[0]), float(vel_prev[1]), float(acc[0]), float(acc[1]), float(yaw_prev)]


def scene_sample_tokens(nusc, scene_token: str) -> list[str]:
    """Sample tokens of a scene in time order."""
    scene = nusc.get("scene", scene_token)
    tokens, tok = [], scene["first_sample_token"]
    while tok:
        tokens.append(tok)
        tok = nusc.get("sample", tok)["next"]
    return tokens


def create_nuscenes_infos(root: str, version: str, out_dir: str,
                          drivelm_jsons: dict[str, str] | None = None,
                          prefix: str = "bevlm_infos", domain: str | None = None,
                          skip_bad: bool = False,
                          question_jsons: dict[str, str] | None = None) -> dict[str, str]:
    """Write one info file per split.

    Args:
        root: nuScenes data root (holds ``samples/`` and ``<version>/``).
        version: e.g. ``v1.0-trainval``, ``v1.0-mini``.
        out_dir: where ``{prefix}_{split}.pkl`` are written.
        drivelm_jsons: ``{split: path}``. Each split holds every key frame of the scenes that
            appear in that DriveLM file, with its QA attached. Without it, the official
            nuScenes scene splits are used (``train``/``val`` or ``mini_train``/``mini_val``).
        prefix: output file name prefix.
        domain: data domain name stored as ``metainfo['domain']`` (multi-domain / multi-LoRA
            training, :mod:`bevlm.datasets.unified_format`); None = not stored.
        skip_bad: frames whose DriveLM QA fail a check (:func:`bevlm.datasets.drivelm_io.load_drivelm`,
            c-tags inside the images) keep their sensor data but get no QA (logged with a count),
            instead of stopping the conversion.
        question_jsons: ``{split: path}`` of questions-only DriveLM test files (the challenge's
            ``v1_1_val_nus_q_only.json``): each split holds every key frame of the file's scenes,
            without QA (``tools/test.py --submission`` asks the file's questions on them).

    Returns:
        ``{split: written path}``.
    """
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    nusc = NuScenes(version=version, dataroot=root, verbose=False)
    builder = NuScenesInfoBuilder(nusc)
    name2token = {s["name"]: s["token"] for s in nusc.scene}
    splits: dict[str, tuple[list[str], dict]] = {}
    for split, path in (question_jsons or {}).items():
        questions = load_drivelm_questions(path)
        missing = [s for s in questions if s not in {sc["token"] for sc in nusc.scene}]
        if missing:
            raise KeyError(f"{path}: {len(missing)} scene tokens are not in {root}/{version} "
                           f"(first: {missing[0]}). Fix: pass the nuScenes version these questions belong to")
        splits[split] = (list(questions.keys()), {}, path)
    if drivelm_jsons:
        for split, path in drivelm_jsons.items():
            data = load_drivelm(path, skip_bad=skip_bad)
            frames = {}
            for scene_token, frame_token, frame, scene in iter_frames(data):
                frames[frame_token] = dict(frame, scene_description=scene.get("scene_description", ""))
            missing = [s for s in data if s not in {sc["token"] for sc in nusc.scene}]
            if missing:
                raise KeyError(f"{path}: {len(missing)} scene tokens are not in {root}/{version} "
                               f"(first: {missing[0]}). Fix: pass the nuScenes version these QA belong to")
            splits[split] = (list(data.keys()), frames, path)
    elif not question_jsons:
        official = create_splits_scenes()
        keys = ("mini_train", "mini_val") if "mini" in version else ("train", "val")
        for key in keys:
            tokens = [name2token[n] for n in official[key] if n in name2token]
            splits[key.replace("mini_", "")] = (tokens, {}, "")
    written = {}
    for split, (scene_tokens, frames, qa_path) in splits.items():
        data_list = []
        n_single = n_bad = 0
        for scene_token in scene_tokens:
            tokens = scene_sample_tokens(nusc, scene_token)
            n_single += len(tokens) == 1
            for idx, tok in enumerate(tokens):
                info = builder.build(tok, idx)
                info["drivelm"] = frames.get(tok)
                if info["drivelm"] is not None:
                    try:
                        check_ctag_bounds(qa_path, f"scene {scene_token} / frame {tok}", info["drivelm"],
                                          {c: (v["width"], v["height"]) for c, v in info["images"].items()})
                    except DriveLMFormatError:
                        if not skip_bad:
                            raise
                        info["drivelm"], n_bad = None, n_bad + 1
                info["sample_idx"] = len(data_list)
                data_list.append(info)
        if n_bad:
            logger.warning("%s: %d frames dropped their QA (c-tags outside the images; --skip-bad)", split, n_bad)
        if n_single:
            logger.warning("%s: %d scenes have a single key frame; they get no temporal history",
                           split, n_single)
        metainfo = {"classes": CLASSES, "dataset": "nuscenes", "version": version,
                    "data_root": os.path.abspath(root), "info_version": "bevlm-1.0",
                    "num_qa_frames": sum(i["drivelm"] is not None for i in data_list)}
        if domain is not None:
            metainfo["domain"] = domain
        path = os.path.join(out_dir, f"{prefix}_{split}.pkl")
        write_pickle_atomic({"metainfo": metainfo, "data_list": data_list}, path)
        logger.info("wrote %s: %d frames (%d with QA)", path, len(data_list), metainfo["num_qa_frames"])
        written[split] = path
    return written
