"""Necks between the image backbone and the BEV encoder."""
from .fpn_lite import FPNLite

__all__ = ["FPNLite"]
