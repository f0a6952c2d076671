"""Ego motion between consecutive key frames, as a typed structure.

BEVFormer passes ego motion as an 18-vector ``can_bus`` read by magic indices;
here it is one rigid transform with named accessors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class EgoMotion:
    """Rigid motion of the ego vehicle from the previous key frame to this one.

    Attributes:
        prev2curr: ``[4, 4]`` (or batched ``[B, 4, 4]``) float tensor mapping
            homogeneous points in the *previous* ego frame to the *current* ego
            frame, i.e. ``p_curr = prev2curr @ p_prev``.
        valid: bool (or ``[B]`` bool tensor). False on the first frame of a
            scene, where there is no previous frame; then ``prev2curr`` is the
            identity and must not be used to warp anything.
    """

    prev2curr: torch.Tensor
    valid: bool | torch.Tensor = True

    @classmethod
    def identity(cls, valid: bool = False) -> "EgoMotion":
        """No motion; ``valid=False`` marks the first frame of a scene."""
        return cls(torch.eye(4), valid)

    @classmethod
    def from_poses(cls, prev_ego2global, curr_ego2global) -> "EgoMotion":
        """Build from two ego poses (``[4, 4]`` ego->global, array-like)."""
        prev = torch.as_tensor(prev_ego2global, dtype=torch.float64)
        curr = torch.as_tensor(curr_ego2global, dtype=torch.float64)
        return cls(torch.linalg.inv(curr) @ prev, True)

    @property
    def translation(self) -> torch.Tensor:
        """``[..., 3]`` position of the previous ego origin in the current frame."""
        return self.prev2curr[..., :3, 3]

    @property
    def yaw(self) -> torch.Tensor:
        """``[...]`` heading change (radians, counter-clockwise) prev -> curr."""
        return torch.atan2(self.prev2curr[..., 1, 0], self.prev2curr[..., 0, 0])

    def float(self) -> "EgoMotion":
        return EgoMotion(self.prev2curr.float(), self.valid)

    @staticmethod
    def stack(motions: list["EgoMotion"]) -> "EgoMotion":
        """Batch a list of single motions: ``prev2curr [B, 4, 4]``, ``valid [B]``."""
        mats = torch.stack([m.prev2curr.float() for m in motions])
        valid = torch.tensor([bool(m.valid) for m in motions])
        return EgoMotion(mats, valid)

    def to(self, device) -> "EgoMotion":
        valid = self.valid.to(device) if torch.is_tensor(self.valid) else self.valid
        return EgoMotion(self.prev2curr.to(device), valid)

    def __repr__(self) -> str:  # short and readable in logs
        if self.prev2curr.dim() == 2:
            t = self.translation.tolist()
            return (f"EgoMotion(dx={t[0]:.2f}, dy={t[1]:.2f}, "
                    f"dyaw={math.degrees(float(self.yaw)):.1f}deg, valid={bool(self.valid)})")
        return f"EgoMotion(batch={self.prev2curr.shape[0]}, valid={self.valid.tolist()})"
