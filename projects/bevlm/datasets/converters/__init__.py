from .drivelm_only import build_drivelm_only_infos, create_drivelm_only_infos
from .nuscenes_infos import CLASSES, create_nuscenes_infos, write_pickle_atomic

__all__ = ["CLASSES", "create_nuscenes_infos", "build_drivelm_only_infos",
           "create_drivelm_only_infos", "write_pickle_atomic"]
