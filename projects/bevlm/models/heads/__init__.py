from .bev_aux_head import BEVAuxHead
from .traj_head import TrajectoryTokenHead

__all__ = ["BEVAuxHead", "TrajectoryTokenHead"]
