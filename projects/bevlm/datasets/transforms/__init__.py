from .formatting import PackDriveInputs
from .geometry import ResizeMultiViewImages, ego2img_matrix
from .loading import CorruptImageError, LoadMultiViewImages, read_rgb

__all__ = ["LoadMultiViewImages", "ResizeMultiViewImages", "PackDriveInputs", "ego2img_matrix",
           "read_rgb", "CorruptImageError"]
