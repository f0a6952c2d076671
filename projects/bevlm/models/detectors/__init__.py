from .bev_det import BEVDet
from .bev_vlm import BEVVLM

__all__ = ["BEVDet", "BEVVLM"]
