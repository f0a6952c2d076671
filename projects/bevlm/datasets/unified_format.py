"""The one sample format every data source is converted into (multi-dataset training).

Every converter writes the same info file: a pickle ``{"metainfo": ..., "data_list": [...]}`` in
the mmdet3d v2 layout, one entry per key frame (field by field in
:mod:`bevlm.datasets.converters.nuscenes_infos`). Sources today:

=====================  ==============================================  ===========================
source                 converter                                       notes
=====================  ==============================================  ===========================
mini world (any        ``create_data.py world [--traffic-side left     full geometry, boxes,
options)               --lighting night --rig wide-high ...]``         trajectories
real nuScenes +        ``create_data.py nuscenes --drivelm-json ...``  full geometry
DriveLM
DriveLM only (images   ``create_data.py drivelm --json ... ``          nominal rig, no boxes or
+ QA, e.g. the public  ``--image-root ...``                            trajectories
sample)
=====================  ==============================================  ===========================

What a consumer may rely on (checked by :func:`validate_infos`):

* ``metainfo``: ``classes``, ``dataset``, ``info_version`` and optionally ``domain`` (the name
  a multi-domain model maps to a LoRA adapter; ``BEVDriveDataset(domain=...)`` overrides it);
* per frame: :data:`FRAME_KEYS`; ``images`` holds the 6 cameras with :data:`CAMERA_KEYS`;
  ``drivelm`` is the DriveLM v1.1 frame dict (``QA``, ``key_object_infos``, ``image_paths``
  plus the scene's ``scene_description``) or None for frames without QA.

The DriveLM part round-trips: :func:`infos_to_drivelm` rebuilds the DriveLM v1.1 JSON of the
frames with QA, equal to the file the info was built from (tested for every source).
"""
from __future__ import annotations

from bevlm.structures import CAMERA_NAMES

#: Keys of every frame entry.
FRAME_KEYS = ("token", "scene_token", "timestamp", "frame_idx", "prev", "next", "ego2global", "prev2curr",
              "images", "instances", "ego_fut_traj", "ego_fut_mask", "ego_status", "drivelm")
#: Keys of every camera of ``images``.
CAMERA_KEYS = ("img_path", "cam2img", "cam2ego", "lidar2cam", "height", "width")
METAINFO_KEYS = ("classes", "dataset", "info_version")


class InfoFormatError(ValueError):
    """An info file does not follow the unified format; the message names file, key and fix."""


def validate_infos(data: dict, path: str = "<infos>") -> None:
    """Check ``data`` (a loaded info file) against the unified format.

    Raises:
        InfoFormatError: naming the file, the frame, the missing key and the fix.
    """
    fix = "rebuild the file with tools/create_data.py (the converters write every key)"
    if not isinstance(data, dict) or "metainfo" not in data or "data_list" not in data:
        raise InfoFormatError(f"{path}: top level: expected {{'metainfo', 'data_list'}}. Fix: {fix}")
    for key in METAINFO_KEYS:
        if key not in data["metainfo"]:
            raise InfoFormatError(f"{path}: metainfo: missing key '{key}'. Fix: {fix}")
    for i, frame in enumerate(data["data_list"]):
        where = f"data_list[{i}] (token {frame.get('token', '?')})"
        for key in FRAME_KEYS:
            if key not in frame:
                raise InfoFormatError(f"{path}: {where}: missing key '{key}'. Fix: {fix}")
        for cam in CAMERA_NAMES:
            if cam not in frame["images"]:
                raise InfoFormatError(f"{path}: {where}: images lacks camera '{cam}'. Fix: every frame needs "
                                      f"the 6 cameras {CAMERA_NAMES}")
            for key in CAMERA_KEYS:
                if key not in frame["images"][cam]:
                    raise InfoFormatError(f"{path}: {where}: images[{cam}] misses '{key}'. Fix: {fix}")
        if len(frame["ego_fut_traj"]) != len(frame["ego_fut_mask"]):
            raise InfoFormatError(f"{path}: {where}: ego_fut_traj and ego_fut_mask differ in length. Fix: {fix}")
        lm = frame["drivelm"]
        if lm is not None and not {"QA", "key_object_infos"} <= set(lm):
            raise InfoFormatError(f"{path}: {where}: drivelm lacks 'QA' or 'key_object_infos'. Fix: {fix}")


def infos_to_drivelm(data_list: list[dict]) -> dict:
    """The DriveLM v1.1 JSON ``{scene: {"scene_description", "key_frames": {token: frame}}}``
    of the frames that carry QA (scenes and frames in info order)."""
    out: dict = {}
    for frame in data_list:
        lm = frame.get("drivelm")
        if lm is None:
            continue
        lm = dict(lm)
        description = lm.pop("scene_description", "")
        scene = out.setdefault(frame["scene_token"], {"scene_description": description, "key_frames": {}})
        scene["key_frames"][frame["token"]] = lm
    return out
