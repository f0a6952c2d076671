from . import transforms  # noqa: F401  (registers the transforms)
from .drive_dataset import BEVDriveDataset, dataset_frames, info_file_frames
from .drivelm_io import CTAG_RE, DriveLMFormatError, flatten_qa, load_drivelm, parse_ctags

__all__ = ["BEVDriveDataset", "dataset_frames", "info_file_frames", "load_drivelm", "flatten_qa", "parse_ctags", "CTAG_RE", "DriveLMFormatError"]
