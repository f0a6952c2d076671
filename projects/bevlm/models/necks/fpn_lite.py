"""A small feature pyramid network.

FPN (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017):
1x1 lateral convs to a common width, a top-down pathway (nearest upsampling
+ add), and 3x3 output convs. Extra coarser levels, if asked for, come from
stride-2 3x3 convs on the last output (as RetinaNet's P6/P7).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.registry import MODELS


@MODELS.register_module()
class FPNLite(nn.Module):
    """Feature pyramid with ``num_outs`` outputs of ``out_channels`` channels.

    Args:
        in_channels: channels of each input level, finest first.
        out_channels: channels of every output level.
        num_outs: outputs. ``< len(in_channels)``: the finest ``num_outs``
            levels (the top-down pass still uses all inputs);
            ``> len(in_channels)``: extra stride-2 levels. None = one per input.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 64,
                 num_outs: int | None = None) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = len(self.in_channels) if num_outs is None else int(num_outs)
        if self.num_outs < 1 or not self.in_channels:
            raise ValueError(f"FPNLite: need in_channels and num_outs >= 1, got {in_channels}, "
                             f"{num_outs}; fix the neck config.")
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.in_channels)
        num_fpn = min(self.num_outs, len(self.in_channels))
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                       for _ in range(num_fpn))
        self.extra_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            for _ in range(self.num_outs - num_fpn))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Args: feats list of ``[B, C_in_l, h_l, w_l]`` (finest first).

        Returns: ``num_outs`` tensors ``[B, out_channels, h_l, w_l]``.
        """
        if len(feats) != len(self.in_channels):
            raise ValueError(f"FPNLite: got {len(feats)} inputs, expected {len(self.in_channels)}; "
                             "make `neck.in_channels` match the backbone's `out_indices`.")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats)]
        for lvl in range(len(laterals) - 1, 0, -1):
            laterals[lvl - 1] = laterals[lvl - 1] + F.interpolate(
                laterals[lvl], size=laterals[lvl - 1].shape[-2:], mode="nearest")
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        for conv in self.extra_convs:
            outs.append(conv(F.relu(outs[-1])))
        return outs
