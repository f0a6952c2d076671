"""Info files from DriveLM QA + images alone (no nuScenes metadata tables).

The public DriveLM sample ships the QA JSON and the 6 camera images of each key frame but
no calibration, ego pose or boxes. This converter gives every frame the nominal nuScenes rig
(:func:`bevlm.structures.nominal_rig`) and an unknown ego pose, and says so with a logged
warning. Consequences: BEV geometry is approximate, ego motion is unknown (the temporal
history is disabled: ``prev2curr`` is None), and there are no 3D boxes or trajectories
(``ego_fut_mask`` is all zero). Frames are put in time order from the image timestamps,
because DriveLM does not store key frames in time order.
"""
from __future__ import annotations

import logging
import os
import re

import numpy as np

from bevlm.structures import CAMERA_NAMES, nominal_rig
from ..drivelm_io import DriveLMFormatError, check_ctag_bounds, iter_frames, load_drivelm, resolve_image_path
from .nuscenes_infos import CLASSES, FUTURE_STEPS, write_pickle_atomic

logger = logging.getLogger(__name__)
_TS_RE = re.compile(r"__(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def _timestamp_us(path: str) -> int:
    m = _TS_RE.search(path)
    return int(m.group(1)) if m else 0


def _image_size(path: str, json_path: str, where: str) -> tuple[int, int]:
    """``(width, height)`` of an image, fully decoded once (a corrupt file fails here, named)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DriveLMFormatError(f"{json_path}: {where}: image {path} cannot be decoded ({e}). Fix: "
                                 f"replace the file with the original JPEG, or drop the frame (--skip-bad)") from e


def _frame_images(json_path: str, image_root: str, where: str, frame: dict, check_images: bool) -> dict:
    """The ``images`` entry of one frame's info (nominal rig at the real image size)."""
    images = {}
    for cam in CAMERA_NAMES:
        if cam not in frame["image_paths"]:
            raise DriveLMFormatError(f"{json_path}: {where}: image_paths lacks '{cam}'. "
                                     f"Fix: every frame needs the 6 cameras {CAMERA_NAMES}")
        rel = frame["image_paths"][cam]
        full = resolve_image_path(rel, image_root)
        if check_images and not os.path.isfile(full):
            raise FileNotFoundError(f"{json_path}: {where} {cam}: image {full} not found. "
                                    f"Fix: pass --image-root, the folder that holds samples/")
        w, h = _image_size(full, json_path, f"{where} {cam}") if check_images else (1600, 900)
        rig = nominal_rig((w, h))[cam]
        images[cam] = {"img_path": os.path.relpath(full, image_root),
                       "cam2img": rig["cam2img"].tolist(), "cam2ego": rig["cam2ego"].tolist(),
                       "lidar2cam": np.linalg.inv(rig["cam2ego"]).tolist(), "height": h,
                       "width": w, "timestamp": _timestamp_us(rel) / 1e6,
                       "sample_data_token": ""}
    if check_images:
        check_ctag_bounds(json_path, where, frame, {c: (v["width"], v["height"]) for c, v in images.items()})
    return images


def build_drivelm_only_infos(json_path: str, image_root: str, check_images: bool = True,
                             skip_bad: bool = False) -> list[dict]:
    """Info dicts (same layout as :mod:`.nuscenes_infos`) from a DriveLM JSON and its images.

    Args:
        json_path: DriveLM v1.1 JSON.
        image_root: folder that holds ``samples/CAM_*/...`` (DriveLM paths start with
            ``../nuscenes/samples``; the part from ``samples/`` on is joined to this root).
        check_images: decode every image once (clear error on a missing or corrupt file) and check
            that every c-tag lies inside its camera's image.
        skip_bad: drop bad frames (logged with a count) instead of raising
            (:func:`bevlm.datasets.drivelm_io.load_drivelm`).
    """
    data = load_drivelm(json_path, skip_bad=skip_bad)
    logger.warning("%s has no calibration/ego pose: using the NOMINAL nuScenes camera rig and no ego "
                   "motion (BEV geometry approximate, temporal history off, no boxes/trajectories)",
                   json_path)
    by_scene: dict[str, list] = {}
    n_bad = 0
    for scene_token, frame_token, frame, scene in iter_frames(data):
        try:
            images = _frame_images(json_path, image_root, f"scene {scene_token} / frame {frame_token}", frame,
                                   check_images)
        except (DriveLMFormatError, FileNotFoundError):
            if not skip_bad:
                raise
            n_bad += 1
            continue
        by_scene.setdefault(scene_token, []).append((frame_token, frame, scene, images))
    if n_bad:
        logger.warning("%s: dropped %d frames with missing / corrupt images or c-tags outside them", json_path, n_bad)
    infos = []
    for scene_token, frames in by_scene.items():
        frames.sort(key=lambda f: _timestamp_us(f[1]["image_paths"]["CAM_FRONT"]))
        for idx, (frame_token, frame, scene, images) in enumerate(frames):
            infos.append({
                "token": frame_token, "scene_token": scene_token, "scene_name": scene_token[:8],
                "timestamp": _timestamp_us(frame["image_paths"]["CAM_FRONT"]) / 1e6, "frame_idx": idx,
                "prev": frames[idx - 1][0] if idx > 0 else "",
                "next": frames[idx + 1][0] if idx + 1 < len(frames) else "",
                "ego2global": np.eye(4).tolist(), "prev2curr": None, "images": images,
                "instances": [], "ego_fut_traj": np.zeros((FUTURE_STEPS, 2)).tolist(),
                "ego_fut_mask": [0.0] * FUTURE_STEPS, "ego_status": [0.0] * 5, "nominal_rig": True,
                "drivelm": dict(frame, scene_description=scene.get("scene_description", "")),
                "sample_idx": len(infos),
            })
    return infos


def create_drivelm_only_infos(json_path: str, image_root: str, out_path: str, domain: str | None = None,
                              skip_bad: bool = False) -> str:
    """Write the info file of a DriveLM-only source; returns its path (``domain``: see
    :func:`.nuscenes_infos.create_nuscenes_infos`; ``skip_bad``: see :func:`build_drivelm_only_infos`)."""
    infos = build_drivelm_only_infos(json_path, image_root, skip_bad=skip_bad)
    metainfo = {"classes": CLASSES, "dataset": "drivelm_only", "data_root": os.path.abspath(image_root),
                "info_version": "bevlm-1.0", "nominal_rig": True, "num_qa_frames": len(infos)}
    if domain is not None:
        metainfo["domain"] = domain
    write_pickle_atomic({"metainfo": metainfo, "data_list": infos}, out_path)
    return out_path
