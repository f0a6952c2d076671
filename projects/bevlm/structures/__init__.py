from .cameras import CAMERA_NAMES, NUSCENES_IMAGE_SIZE, nominal_rig
from .ego_motion import EgoMotion
from .data_sample import DriveDataSample, QAItem

__all__ = ["CAMERA_NAMES", "NUSCENES_IMAGE_SIZE", "nominal_rig", "EgoMotion", "DriveDataSample", "QAItem"]
