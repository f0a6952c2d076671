from .bev_aux_head import BEVAuxHead
from .centerpoint_head import CenterPointHead
from .traj_head import TrajectoryTokenHead

__all__ = ["BEVAuxHead", "CenterPointHead", "TrajectoryTokenHead"]
