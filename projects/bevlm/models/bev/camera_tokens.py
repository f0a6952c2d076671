"""Camera patch tokens: the CLIP-style baseline without a BEV.

Like the image-patch tokens of CLIP-based driving VLMs (e.g. DriveLM-Agent
on BLIP-2 / LLaMA-Adapter), each camera contributes a small grid of 2D patch
tokens: the finest feature map of each camera is adaptive-average-pooled to
``grid_hw`` cells and tagged with a learned camera embedding and a learned
patch-position embedding. Followed by a projector with the same number of
output tokens as the BEV path (e.g. :class:`ResamplerProjector` with the same
``num_queries``), it compares "2D patches" against "BEV" at an equal LLM
token budget.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.registry import MODELS


def _default_grid(tokens_per_cam: int) -> tuple[int, int]:
    """Most square (h, w) with h * w = tokens_per_cam and w >= h (images are wide)."""
    h = int(math.isqrt(tokens_per_cam))
    while tokens_per_cam % h:
        h -= 1
    return h, tokens_per_cam // h


@MODELS.register_module()
class CameraPatchTokens(nn.Module):
    """Per-camera pooled patch tokens ``[B, N * tokens_per_cam, C]``.

    Args:
        in_dims: channels C of the image features.
        num_cams: cameras N.
        tokens_per_cam: tokens per camera.
        grid_hw: pooled grid (h, w) with h * w = tokens_per_cam; None picks
            the most square grid that is at least as wide as high.
        feat_level: index of the feature level to pool (0 = finest).
    """

    def __init__(self, in_dims: int, num_cams: int = 6, tokens_per_cam: int = 4,
                 grid_hw: tuple[int, int] | None = None, feat_level: int = 0) -> None:
        super().__init__()
        grid_hw = _default_grid(tokens_per_cam) if grid_hw is None else tuple(grid_hw)
        if grid_hw[0] * grid_hw[1] != tokens_per_cam:
            raise ValueError(f"CameraPatchTokens: grid_hw={grid_hw} does not give tokens_per_cam="
                             f"{tokens_per_cam} tokens; fix `grid_hw` or `tokens_per_cam`.")
        self.in_dims, self.num_cams, self.tokens_per_cam = in_dims, num_cams, tokens_per_cam
        self.grid_hw, self.feat_level = grid_hw, feat_level
        self.cam_embed = nn.Parameter(torch.zeros(num_cams, in_dims))
        self.patch_embed = nn.Parameter(torch.zeros(tokens_per_cam, in_dims))
        nn.init.normal_(self.cam_embed, std=0.02)
        nn.init.normal_(self.patch_embed, std=0.02)

    @property
    def num_tokens(self) -> int:
        """Total tokens N * tokens_per_cam."""
        return self.num_cams * self.tokens_per_cam

    def forward(self, mlvl_feats: list[Tensor]) -> Tensor:
        """Pool each camera's feature map into patch tokens.

        Args:
            mlvl_feats: list of ``[B, N, C, h_l, w_l]`` (only ``feat_level`` is used).

        Returns:
            ``[B, N * tokens_per_cam, C]``, camera-major, each camera row-major.
        """
        feat = mlvl_feats[self.feat_level]
        if feat.dim() != 5 or feat.shape[1] != self.num_cams or feat.shape[2] != self.in_dims:
            raise ValueError(f"CameraPatchTokens: features must be [B, N={self.num_cams}, "
                             f"C={self.in_dims}, h, w], got {tuple(feat.shape)}; check `in_dims` "
                             "and `num_cams` against the neck.")
        b, n, c, h, w = feat.shape
        pooled = F.adaptive_avg_pool2d(feat.reshape(b * n, c, h, w), self.grid_hw)  # [B*N, C, gh, gw]
        tokens = pooled.flatten(2).transpose(1, 2).reshape(b, n, self.tokens_per_cam, c)  # [B, N, T, C]
        tokens = tokens + self.cam_embed.view(1, n, 1, c) + self.patch_embed.view(1, 1, -1, c)
        return tokens.reshape(b, n * self.tokens_per_cam, c)  # [B, N*T, C]
