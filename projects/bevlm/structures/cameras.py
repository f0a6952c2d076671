"""Camera names and conventions shared by the whole package.

Frames (nuScenes conventions):
  * ego / BEV frame: x forward, y left, z up, metres, origin at the rear axle
    projected to the ground. The BEV grid of the encoder lives in this frame.
  * camera frame: x right, y down, z forward (OpenCV).
  * image: origin at the upper-left corner, +x right, +y down, pixels.
"""

#: The six nuScenes cameras, in DriveLM's ``image_paths`` order. Every tensor
#: with a camera axis uses this order.
CAMERA_NAMES = (
    "CAM_FRONT",
    "CAM_FRONT_LEFT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)

#: (width, height) of real nuScenes / DriveLM camera images. DriveLM c-tags and
#: 2D boxes are in this pixel frame.
NUSCENES_IMAGE_SIZE = (1600, 900)


# Nominal nuScenes camera rig: (translation cam->ego [m], yaw of the optical
# axis [deg, counter-clockwise from ego +x], fx [px @1600x900], cx, cy).
# Values are rounded from the calibration of a typical nuScenes log. Used by
# the mini-world generator and as the fallback for DriveLM-only data, which
# ships no calibration.
_NOMINAL_RIG = {
    "CAM_FRONT": ((1.70, 0.02, 1.51), 0.0, 1266.4, 816.3, 491.5),
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0, 1272.6, 826.6, 479.8),
    "CAM_FRONT_RIGHT": ((1.55, -0.49, 1.50), -55.0, 1260.8, 808.0, 495.3),
    "CAM_BACK": ((0.03, 0.00, 1.58), 180.0, 809.2, 829.2, 481.8),
    "CAM_BACK_LEFT": ((1.04, 0.48, 1.59), 110.0, 1256.7, 817.8, 451.9),
    "CAM_BACK_RIGHT": ((1.01, -0.48, 1.56), -110.0, 1259.5, 807.3, 501.2),
}


def cam_rotation_from_yaw(yaw_deg: float):
    """3x3 rotation cam->ego for a level camera whose optical axis has ``yaw_deg``.

    Columns are the camera axes expressed in the ego frame: x (right),
    y (down), z (optical axis).
    """
    import numpy as np

    psi = np.deg2rad(yaw_deg)
    return np.array(
        [[np.sin(psi), 0.0, np.cos(psi)],
         [-np.cos(psi), 0.0, np.sin(psi)],
         [0.0, -1.0, 0.0]])


#: Camera rigs the mini world can render: name -> (mounting height offset [m], focal-length scale).
#: ``'nuscenes'`` is the nominal rig; ``'wide-high'`` mounts every camera 0.6 m higher (a van /
#: light truck) with 0.7x the focal length (front camera: 84 instead of 64 deg horizontal field of
#: view): a different camera rig as a data domain. Principal points and yaws are unchanged.
CAMERA_RIGS = {"nuscenes": (0.0, 1.0), "wide-high": (0.6, 0.7)}


def camera_rig(name: str = "nuscenes", image_size=NUSCENES_IMAGE_SIZE):
    """The rig ``name`` of :data:`CAMERA_RIGS` for images of ``image_size``, in the format of
    :func:`nominal_rig` (which is ``camera_rig('nuscenes', image_size)``)."""
    if name not in CAMERA_RIGS:
        raise ValueError(f"camera_rig: unknown rig {name!r}; use one of {sorted(CAMERA_RIGS)}")
    dz, focal_scale = CAMERA_RIGS[name]
    rig = nominal_rig(image_size)
    for cam in rig.values():
        cam["cam2ego"][2, 3] += dz
        cam["cam2img"][0, 0] *= focal_scale
        cam["cam2img"][1, 1] *= focal_scale
    return rig


def nominal_rig(image_size=NUSCENES_IMAGE_SIZE):
    """Nominal nuScenes rig for images of ``image_size`` = (width, height).

    Intrinsics are scaled from 1600x900 by ``width / 1600`` and
    ``height / 900`` so that projections stay consistent at any size.

    Returns:
        dict camera name -> {"cam2ego": 4x4 ndarray, "cam2img": 3x3 ndarray}.
    """
    import numpy as np

    sx = image_size[0] / NUSCENES_IMAGE_SIZE[0]
    sy = image_size[1] / NUSCENES_IMAGE_SIZE[1]
    rig = {}
    for name in CAMERA_NAMES:
        t, yaw, f, cx, cy = _NOMINAL_RIG[name]
        cam2ego = np.eye(4)
        cam2ego[:3, :3] = cam_rotation_from_yaw(yaw)
        cam2ego[:3, 3] = t
        cam2img = np.array([[f * sx, 0.0, cx * sx], [0.0, f * sy, cy * sy], [0.0, 0.0, 1.0]])
        rig[name] = {"cam2ego": cam2ego, "cam2img": cam2img}
    return rig
