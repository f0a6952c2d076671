"""Encoder early exit: run only the first k BEVFormer-lite layers, and what that saves.

:meth:`bevlm.models.bev.BEVFormerLiteEncoder.forward` takes ``num_layers=k`` and returns the
queries after layer k (every layer maps BEV queries to BEV queries of the same shape, so the
projector reads them unchanged). This module measures the FLOPs of each choice of k.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bevlm.utils import count_flops


@torch.no_grad()
def bev_encoder_flops_by_layers(encoder: nn.Module, mlvl_feats: list[Tensor], ego2img: Tensor,
                                img_shape: tuple[int, int],
                                layer_counts: Sequence[int] | None = None) -> dict[int, int]:
    """FLOPs of the BEV encoder for each early-exit depth.

    Counted with ``FlopCounterMode`` (matmuls / linear layers / convolutions; the bilinear
    sampling of deformable attention has no FLOP formula there and is not counted). The frame
    has no temporal history; temporal self-attention then attends the current queries twice,
    which costs the same as attending a previous BEV.

    Args:
        encoder: :class:`bevlm.models.bev.BEVFormerLiteEncoder`.
        mlvl_feats: ``num_levels`` tensors ``[B, N, C, h_l, w_l]`` (backbone + neck output).
        ego2img: ``[B, N, 4, 4]``.
        img_shape: (H, W) of the input images.
        layer_counts: depths to measure (default ``1 .. encoder.num_layers``).

    Returns:
        ``{num_layers: flops}`` for the whole batch.
    """
    counts = list(layer_counts) if layer_counts is not None else list(range(1, encoder.num_layers + 1))
    out: dict[int, int] = {}
    for k in counts:
        with count_flops(encoder) as flops:
            encoder(mlvl_feats, ego2img, img_shape, prev_bev=None, ego_motion=None, num_layers=k)
        out[int(k)] = flops["flops"]
    return out
