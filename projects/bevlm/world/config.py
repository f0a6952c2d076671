"""Configuration of the procedural mini world and the named thresholds its labels use.

Every rule that turns ground truth into a label (speed classes, steering classes,
direction sectors, visibility) reads its threshold from this module, so a test
can re-derive the labels with the same numbers without calling the generator.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..structures.cameras import CAMERA_RIGS

# --------------------------------------------------------------------------- timing
#: Key frames per second (nuScenes key frames are at 2 Hz).
KEYFRAME_HZ = 2.0
#: Microseconds between two key frames.
KEYFRAME_US = 500_000
#: Simulation step (s). Poses are recorded every ``1 / (KEYFRAME_HZ * SIM_DT)`` steps.
SIM_DT = 0.1
#: Seconds simulated before the first key frame so traffic settles.
WARMUP_S = 3.0
#: Future horizon (s) and number of 0.5 s future waypoints of every key frame.
FUTURE_S = 3.0
FUTURE_STEPS = 6

# --------------------------------------------------------------------------- perception
#: Objects further than this from the ego origin are not annotated (m).
ANNOTATION_RANGE = 60.0
#: Objects further than this are not counted by the direction questions (m).
PERCEPTION_RANGE = 50.0
#: An object counts as seen in a camera with at least this many visible pixels,
#: expressed as a fraction of the image area (0.0004 = 23 px at 320x180).
MIN_VISIBLE_AREA_FRACTION = 0.0004
#: A key object needs at least this visible fraction (visible / unoccluded pixels)
#: in its camera, so an object hidden behind another is never a key object.
KEY_MIN_VISIBLE_FRACTION = 0.5
#: A key object needs at least this many visible pixels as a fraction of the image
#: area (0.002 = 115 px at 320x180).
KEY_MIN_AREA_FRACTION = 0.002
#: Key objects (agents) are taken within this distance (m); the governing light within 70 m.
KEY_RANGE = 40.0
KEY_LIGHT_RANGE = 70.0
#: Up to this many key agents plus the governing traffic light.
MAX_KEY_AGENTS = 4

# --------------------------------------------------------------------------- motion classes
#: Below this speed (m/s) an object or the ego is "not moving" / "Stationary".
MOVING_SPEED = 0.5
#: Ego speed classes on the mean speed of the 3 s future (m/s): below SLOW_MAX is
#: "driving slowly", below NORMAL_MAX "with normal speed", below FAST_MAX "fast",
#: else "very fast".
SLOW_MAX = 4.0
NORMAL_MAX = 8.0
FAST_MAX = 12.0
#: Steering classes on the heading change over the 3 s future (deg, + = left):
#: below STRAIGHT_MAX_DEG "going straight", below SLIGHT_MAX_DEG "slightly steering".
STRAIGHT_MAX_DEG = 5.0
SLIGHT_MAX_DEG = 20.0
#: An object "turns" when its heading changes more than this over the 3 s future (deg).
TURN_DEG = 15.0
#: Ego longitudinal intent: the future speed at 3 s differs from the current speed
#: by more than this (m/s) -> accelerate / decelerate.
SPEED_CHANGE = 1.5
#: Half width (m) of the corridor around the ego future path ("moving direction").
PATH_HALF_WIDTH = 2.5
#: Objects closer than this (m) must always be considered by the planner.
CONSIDER_RANGE = 10.0

# --------------------------------------------------------------------------- directions
#: Direction sectors by the azimuth (deg, counter-clockwise from ego +x) of an object
#: centre in the ego frame. Sectors are centred on the camera yaws (0, +-55, +-110, 180)
#: with boundaries half way between neighbouring cameras: front [-27.5, 27.5],
#: front left (27.5, 82.5], back left (82.5, 145], back (145, 180] u [-180, -145),
#: back right [-145, -82.5), front right [-82.5, -27.5).
DIRECTION_SECTORS = (
    ("front", -27.5, 27.5),
    ("front left", 27.5, 82.5),
    ("back left", 82.5, 145.0),
    ("back right", -145.0, -82.5),
    ("front right", -82.5, -27.5),
)


def direction_of(azimuth_deg: float) -> str:
    """Direction name of an ego-frame azimuth (deg); see :data:`DIRECTION_SECTORS`.

    Boundaries: the front sector is closed; the left sectors include their upper
    bound and the right sectors their lower bound (closer to the front).
    """
    a = float(azimuth_deg)
    if -27.5 <= a <= 27.5:
        return "front"
    if 27.5 < a <= 82.5:
        return "front left"
    if 82.5 < a <= 145.0:
        return "back left"
    if -82.5 <= a < -27.5:
        return "front right"
    if -145.0 <= a < -82.5:
        return "back right"
    return "back"


#: LIDAR_TOP poses on the ego (translation m, rotation quaternion w, x, y, z) by name.
LIDAR_EXTRINSICS = {
    "identity": ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),
    "nuscenes": ([0.943713, 0.0, 1.84023], [0.7071067811865476, 0.0, 0.0, -0.7071067811865476]),
}


@dataclass
class WorldConfig:
    """Options of :func:`bevlm.world.generate_world`.

    Args:
        frames_per_scene: key frames per scene (2 Hz).
        image_size: (width, height) of the stored camera images; (320, 180) is
            nuScenes' 1600x900 divided by 5.
        val_fraction: fraction of scenes (by scene, deterministic) in the val split.
        version: nuScenes version folder name.
        traffic_side: 'right' (drive on the right) or 'left'.
        lighting: 'day' or 'night' (dark sky and ground, lit lamps).
        rig: camera rig, a name of :data:`bevlm.structures.CAMERA_RIGS` ('nuscenes' or
            'wide-high': cameras 0.6 m higher with a wider field of view).
        jpeg_quality: JPEG quality of the camera images.
        lidar_extrinsic: pose of the LIDAR_TOP sensor on the ego: ``'identity'`` (the ego frame,
            the default) or ``'nuscenes'`` (as on the nuScenes cars: 0.94 m ahead, 1.84 m up,
            rotated -90 deg about z, so the LiDAR x axis points to the ego's right); the latter
            exercises conversions between the ego and the LiDAR frame (mmdet3d's box frame).
    """

    frames_per_scene: int = 16
    image_size: tuple = (320, 180)
    val_fraction: float = 0.25
    version: str = "v1.0-mini"
    traffic_side: str = "right"
    lighting: str = "day"
    rig: str = "nuscenes"
    jpeg_quality: int = 90
    lidar_extrinsic: str = "identity"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix when an option is invalid."""
        if self.traffic_side not in ("right", "left"):
            raise ValueError(f"WorldConfig.traffic_side={self.traffic_side!r}: use 'right' or 'left'")
        if self.lighting not in ("day", "night"):
            raise ValueError(f"WorldConfig.lighting={self.lighting!r}: use 'day' or 'night'")
        if self.rig not in CAMERA_RIGS:
            raise ValueError(f"WorldConfig.rig={self.rig!r}: use one of {sorted(CAMERA_RIGS)}")
        if int(self.frames_per_scene) < 2:
            raise ValueError(f"WorldConfig.frames_per_scene={self.frames_per_scene}: use at least 2")
        if len(tuple(self.image_size)) != 2 or min(self.image_size) < 32:
            raise ValueError(f"WorldConfig.image_size={self.image_size}: use (width, height), both >= 32")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"WorldConfig.val_fraction={self.val_fraction}: use a value in [0, 1)")
        if self.lidar_extrinsic not in LIDAR_EXTRINSICS:
            raise ValueError(f"WorldConfig.lidar_extrinsic={self.lidar_extrinsic!r}: use one of {sorted(LIDAR_EXTRINSICS)}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"WorldConfig.jpeg_quality={self.jpeg_quality}: use 1..100")
