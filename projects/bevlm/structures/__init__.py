from .cameras import CAMERA_NAMES, CAMERA_RIGS, NUSCENES_IMAGE_SIZE, camera_rig, nominal_rig
from .ego_motion import EgoMotion
from .data_sample import DriveDataSample, QAItem, is_history_only, scored_samples
from .kinematics import KINEMATIC_MODES, kinematic_waypoints
from .driving_command import COMMANDS, TURN_THRESHOLD_M, driving_command

__all__ = ["COMMANDS", "TURN_THRESHOLD_M", "driving_command", "is_history_only", "scored_samples", "KINEMATIC_MODES", "kinematic_waypoints", "CAMERA_NAMES", "CAMERA_RIGS", "NUSCENES_IMAGE_SIZE", "camera_rig", "nominal_rig", "EgoMotion", "DriveDataSample", "QAItem"]
