from .bev_vlm import BEVVLM

__all__ = ["BEVVLM"]
