from .frame_figure import PANELS, draw_frame
from .runner import visualize_frames

__all__ = ["draw_frame", "visualize_frames", "PANELS"]
