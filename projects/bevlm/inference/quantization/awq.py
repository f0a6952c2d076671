"""Activation-aware weight scaling (AWQ) before int4 quantisation.

Lin et al., 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration", arXiv 2306.00978. Input channels that carry large activations matter more to the
output; scaling their weight columns up by ``s`` before quantisation (and the inputs down by
``1 / s`` at run time) gives them a finer grid inside their group. ``s = a ** alpha`` with ``a``
the activation magnitude per input channel, ``alpha`` searched on a grid per layer.

Here ``a`` is the root mean square of each input channel, read off the diagonal of the
calibration Hessian ``H = 2 / n * X^T X`` that GPTQ accumulates anyway (AWQ's paper uses the mean
absolute value), and the search minimises the output error of the quantised layer on the
calibration inputs, ``trace(dW H dW^T)`` with ``dW = Q(W diag(s)) diag(1 / s) - W``, exactly and
without keeping the activations. ``alpha = 0`` (``s = 1``) is always on the grid, so the chosen
scale is never worse than no scale on that objective. The ``1 / s`` is kept as a per-input-channel
vector of the quantised layer (``QuantLinear4.input_scale``); it could be folded into a preceding
RMSNorm for the q / k / v and gate / up projections.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .int4 import dequantize, quantize_rtn


def output_error(weight: Tensor, w_hat: Tensor, hessian: Tensor) -> float:
    """``trace(dW H dW^T)``: the summed squared output error over the calibration rows (up to H's scale)."""
    d = (w_hat - weight).double()
    return float(((d @ hessian.double()) * d).sum())


def awq_scales(weight: Tensor, hessian: Tensor, group_size: int, grid: int = 10, zero_point: str = "int",
               clip_search: int = 0) -> tuple[Tensor, float, dict]:
    """Search the per-input-channel scale of one Linear.

    Args:
        weight: ``[out, in]`` float weight.
        hessian: ``[in, in]`` calibration Hessian of the layer's inputs.
        group_size: int4 group size.
        grid: ``alpha`` takes ``grid + 1`` values ``0, 1 / grid, ..., 1``.
        zero_point, clip_search: as the round-to-nearest quantiser that scores each candidate.

    Returns:
        ``(s [in] float32, alpha, {"error_plain": e(alpha=0), "error": e(best)})``: quantise
        ``W * s`` and divide the layer's inputs by ``s``.
    """
    if grid < 1:
        raise ValueError(f"awq_scales: grid={grid} must be >= 1")
    w = weight.detach().float()
    h = hessian.detach().float().to(w.device)
    act = torch.diagonal(h).clamp_min(1e-12).sqrt()  # [in] RMS of each input channel (times sqrt 2)
    best = (float("inf"), None, 0.0)
    plain = None
    for i in range(grid + 1):
        alpha = i / grid
        s = act.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()  # centred around 1 (the grid's range stays balanced)
        q, scales, zeros = quantize_rtn(w * s, group_size, bits=4, clip_search=clip_search, zero_point=zero_point)
        w_hat = dequantize(q, scales, zeros, group_size, torch.float32, zero_point) / s
        err = output_error(w, w_hat, h)
        if i == 0:
            plain = err
        if err < best[0]:
            best = (err, s, alpha)
    err, s, alpha = best
    return s.float(), alpha, {"error_plain": plain, "error": err}
