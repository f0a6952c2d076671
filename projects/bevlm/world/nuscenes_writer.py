"""Writes the nuScenes-format database tables (``v1.0-*/*.json``) of the mini world.

Conventions follow the nuScenes schema: tokens are 32 hex characters, rotations are
quaternions ``[w, x, y, z]``, ``size`` is ``[width, length, height]``, translations are
in metres in the global (map) frame, timestamps in microseconds. Each scene has
its own log and map (a drivable-area mask at 0.1 m / pixel, as nuScenes' MapMask
expects). Every file is written to a temporary name first and then renamed.

Besides the standard fields, each ``sample_annotation`` carries ``velocity``
``[vx, vy]`` (m/s, global frame, from the simulation); the devkit ignores it.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..structures import CAMERA_NAMES

CATEGORIES = (
    ("vehicle.car", "Vehicle designed primarily for personal use."),
    ("vehicle.truck", "Vehicle primarily designed to haul cargo."),
    ("vehicle.bus.rigid", "Rigid bus."),
    ("human.pedestrian.adult", "Adult walking, standing or sitting."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    ("movable_object.barrier", "Temporary road barrier."),
    ("movable_object.trafficcone", "All types of traffic cones."),
    ("static_object.traffic_light", "Traffic signal head (mini-world addition)."),
)
ATTRIBUTES = (
    "vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
    "cycle.with_rider", "cycle.without_rider", "traffic_light.red", "traffic_light.yellow", "traffic_light.green",
)
#: nuScenes visibility bins of the visible fraction: token -> (level, lower bound).
VISIBILITY = (("1", "v0-40", 0.0), ("2", "v40-60", 0.4), ("3", "v60-80", 0.6), ("4", "v80-100", 0.8))


def make_token(*parts) -> str:
    """Deterministic 32-hex token from any printable parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def yaw_quaternion(yaw: float) -> list:
    """Quaternion ``[w, x, y, z]`` of a rotation by ``yaw`` about +z."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def matrix_quaternion(R: np.ndarray) -> list:
    """Quaternion ``[w, x, y, z]`` (w >= 0) of a 3x3 rotation matrix."""
    m = np.asarray(R, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q = q / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return [float(v) for v in q]


def visibility_token(fraction: float) -> str:
    """nuScenes visibility token ('1'..'4') of a visible fraction in [0, 1]."""
    tok = "1"
    for t, _, lo in VISIBILITY:
        if fraction >= lo:
            tok = t
    return tok


def write_json_atomic(path: str, obj, indent: int | None = None) -> int:
    """Write JSON to ``path`` through a temporary file; returns the byte count."""
    data = json.dumps(obj, indent=indent).encode()
    write_bytes_atomic(path, data)
    return len(data)


def write_bytes_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class NuScenesTables:
    """Accumulates the 13 nuScenes tables of the mini world.

    Args:
        seed: world seed (part of every token).
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.t = {name: [] for name in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor",
                                        "ego_pose", "sample_annotation", "instance", "category", "attribute",
                                        "visibility", "log", "map")}
        for name, desc in CATEGORIES:
            self.t["category"].append({"token": make_token(seed, "category", name), "name": name,
                                       "description": desc})
        for name in ATTRIBUTES:
            self.t["attribute"].append({"token": make_token(seed, "attribute", name), "name": name,
                                        "description": name.replace(".", ": ")})
        for tok, level, lo in VISIBILITY:
            self.t["visibility"].append({"token": tok, "level": level,
                                         "description": f"visibility of whole object is between {level[1:]} %"})
        for ch in CAMERA_NAMES:
            self.t["sensor"].append({"token": self.sensor_token(ch), "channel": ch, "modality": "camera"})
        self.t["sensor"].append({"token": self.sensor_token("LIDAR_TOP"), "channel": "LIDAR_TOP",
                                 "modality": "lidar"})

    def sensor_token(self, channel: str) -> str:
        return make_token(self.seed, "sensor", channel)

    def category_token(self, name: str) -> str:
        return make_token(self.seed, "category", name)

    def attribute_token(self, name: str) -> str:
        return make_token(self.seed, "attribute", name)

    def add(self, table: str, record: dict) -> dict:
        self.t[table].append(record)
        return record

    @staticmethod
    def link(records: list) -> None:
        """Fill ``prev`` / ``next`` of a time-ordered record chain."""
        for i, r in enumerate(records):
            r["prev"] = records[i - 1]["token"] if i > 0 else ""
            r["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""

    def write(self, table_dir: str) -> int:
        """Write every table to ``table_dir``; returns the bytes written."""
        os.makedirs(table_dir, exist_ok=True)
        return sum(write_json_atomic(os.path.join(table_dir, f"{name}.json"), recs, indent=0)
                   for name, recs in self.t.items())
