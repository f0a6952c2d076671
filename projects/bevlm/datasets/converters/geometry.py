"""Small rigid-transform helpers shared by the info converters (numpy, float64)."""
from __future__ import annotations

import numpy as np
from pyquaternion import Quaternion


def transform_matrix(translation, rotation_wxyz) -> np.ndarray:
    """4x4 matrix from a translation and a [w, x, y, z] quaternion (nuScenes convention)."""
    mat = np.eye(4)
    mat[:3, :3] = Quaternion(rotation_wxyz).rotation_matrix
    mat[:3, 3] = np.asarray(translation, dtype=np.float64)
    return mat


def yaw_of(rotation_3x3: np.ndarray) -> float:
    """Heading (rad, counter-clockwise about +z) of a 3x3 rotation."""
    return float(np.arctan2(rotation_3x3[1, 0], rotation_3x3[0, 0]))


def to_frame(points_xyz: np.ndarray, frame2global: np.ndarray) -> np.ndarray:
    """Global points ``[..., 3]`` -> the frame whose pose is ``frame2global``."""
    inv = np.linalg.inv(frame2global)
    pts = np.asarray(points_xyz, dtype=np.float64)
    return pts @ inv[:3, :3].T + inv[:3, 3]
