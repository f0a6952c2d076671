from .cameras import CAMERA_NAMES, CAMERA_RIGS, NUSCENES_IMAGE_SIZE, camera_rig, nominal_rig
from .ego_motion import EgoMotion
from .data_sample import DriveDataSample, QAItem, is_history_only, scored_samples

__all__ = ["is_history_only", "scored_samples", "CAMERA_NAMES", "CAMERA_RIGS", "NUSCENES_IMAGE_SIZE", "camera_rig", "nominal_rig", "EgoMotion", "DriveDataSample", "QAItem"]
