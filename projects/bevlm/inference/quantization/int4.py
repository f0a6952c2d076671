"""Group-wise asymmetric low-bit weight quantisation and 4-bit packing.

Round-to-nearest (RTN) weight-only quantisation with one fp16 scale and one
fp16 zero point per group of ``group_size`` consecutive input columns, the
storage format used by GPTQ (Frantar et al., 2022, arXiv 2210.17323) and AWQ
(Lin et al., 2023, arXiv 2306.00978)::

    w_hat[o, i] = (q[o, i] - zero[o, i // g]) * scale[o, i // g]

with ``q`` an integer in ``0 .. 2**bits - 1`` and ``zero`` an integer stored in
fp16 (exact). Two 4-bit codes share one byte (:func:`pack_int4`).
"""
from __future__ import annotations

import torch
from torch import Tensor

_FP16_MAX = float(torch.finfo(torch.float16).max)
_FP16_TINY = float(torch.finfo(torch.float16).tiny)  # smallest normal fp16


def pack_int4(q: Tensor) -> Tensor:
    """Pack pairs of 4-bit codes into bytes (even index -> low nibble).

    Args:
        q: uint8 ``[..., 2n]`` with values in ``0..15``.

    Returns:
        uint8 ``[..., n]``: ``byte = q[..., 2j] | (q[..., 2j + 1] << 4)``.
    """
    if q.dtype != torch.uint8:
        raise TypeError(f"pack_int4: expected uint8 codes, got {q.dtype}; cast with q.to(torch.uint8)")
    if q.dim() == 0 or q.shape[-1] % 2 != 0:
        raise ValueError(f"pack_int4: the last dim must be even (two codes per byte), got shape {tuple(q.shape)}; "
                         "pad the input columns to an even count")
    if q.numel() and int(q.max()) > 15:
        raise ValueError(f"pack_int4: codes must be in 0..15, found {int(q.max())}")
    pairs = q.reshape(*q.shape[:-1], q.shape[-1] // 2, 2)  # [..., n, 2]
    return pairs[..., 0] | (pairs[..., 1] << 4)  # [..., n]


def unpack_int4(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4`.

    Args:
        packed: uint8 ``[..., n]``.

    Returns:
        uint8 ``[..., 2n]`` codes in ``0..15``.
    """
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_int4: expected uint8 bytes, got {packed.dtype}")
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)  # [..., 2n]


def check_group_size(in_features: int, group_size: int, where: str) -> None:
    """Raise a clear error unless ``group_size`` divides ``in_features``."""
    if group_size <= 0 or in_features % group_size != 0:
        raise ValueError(f"{where}: group_size={group_size} must be positive and divide in_features={in_features}; "
                         "choose a group size such as 32/64/128 that divides every quantised layer's input dim")


def _minmax_params(w_min: Tensor, w_max: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """fp16 scale (rounded up) and float integer zero covering ``[w_min, w_max]`` (``w_min <= 0 <= w_max``)."""
    scale = ((w_max - w_min) / levels).clamp(min=_FP16_TINY)  # [out]
    scale16 = scale.to(torch.float16)
    up = torch.nextafter(scale16, torch.full_like(scale16, float("inf")))  # next fp16 value
    scale16 = torch.where(scale16.float() < scale, up, scale16)  # round up, never down
    zero = torch.round(-w_min / scale16.float()).clamp(0, levels)  # [out]
    return scale16, zero


def _row_sq_error(w: Tensor, scale16: Tensor, zero: Tensor, levels: int) -> Tensor:
    """Per-row squared error ``sum((w_hat - w)^2)`` of quantising ``w`` ``[out, g]`` with these params."""
    s = scale16.float()[:, None]
    q = torch.clamp(torch.round(w / s) + zero[:, None], 0, levels)
    return ((q - zero[:, None]) * s - w).pow(2).sum(dim=1)  # [out]


def group_params(w_group: Tensor, bits: int, clip_search: int = 0,
                 max_shrink: float = 0.8) -> tuple[Tensor, Tensor]:
    """Asymmetric scale and integer zero point of each row of a weight group.

    The range is widened to include 0 (as in GPTQ), so the zero point is an
    integer in ``0 .. 2**bits - 1``. The scale is rounded UP to the next fp16
    value, so ``(2**bits - 1) * scale`` still covers the range after fp16
    storage and every element is within ``scale / 2`` of its dequantised value.

    With ``clip_search = n > 0`` the range is also shrunk to ``p * [min, max]`` for
    ``p = 1 - i / n`` (``i = 1 .. max_shrink * n``) and each row keeps the ``p`` of least
    squared error (the ``mse`` grid of the GPTQ reference code, with norm 2): outliers are
    clipped when that lowers the group's error; ``p = 1`` (min-max) is a candidate, so no row
    gets a larger error than without the search.

    Args:
        w_group: ``[out, g]`` float weights (any float dtype).
        bits: code width (2..8).
        clip_search: grid size of the clipping search (0: plain min-max).
        max_shrink: largest fraction of the range the search may clip.

    Returns:
        ``(scale, zero)``: fp16 ``[out]`` each.
    """
    levels = (1 << bits) - 1
    w = w_group.float()
    w_min = w.amin(dim=1).clamp(max=0.0)  # [out]
    w_max = w.amax(dim=1).clamp(min=0.0)  # [out]
    if float(torch.maximum(w_max, -w_min).max()) > _FP16_MAX:
        raise ValueError("group_params: weights exceed the fp16 range; the fp16 scales cannot represent them")
    scale16, zero = _minmax_params(w_min, w_max, levels)
    if clip_search > 0:
        best = _row_sq_error(w, scale16, zero, levels)
        for i in range(1, int(max_shrink * clip_search) + 1):
            p = 1.0 - i / clip_search
            s, z = _minmax_params(w_min * p, w_max * p, levels)
            err = _row_sq_error(w, s, z, levels)
            better = err < best
            scale16, zero = torch.where(better, s, scale16), torch.where(better, z, zero)
            best = torch.where(better, err, best)
    return scale16, zero.to(torch.float16)


def quantize_with_params(w: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    """Integer codes of ``w`` ``[out, k]`` given per-row ``scale``/``zero`` ``[out]`` or ``[out, 1]``."""
    levels = (1 << bits) - 1
    s = scale.float().reshape(-1, 1)  # [out, 1]
    z = zero.float().reshape(-1, 1)
    return torch.clamp(torch.round(w.float() / s) + z, 0, levels)  # [out, k] float codes


def quantize_rtn(w: Tensor, group_size: int = 128, bits: int = 4,
                 clip_search: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Round-to-nearest group-wise asymmetric quantisation.

    Args:
        w: ``[out, in]`` float weight.
        group_size: consecutive input columns sharing one scale/zero.
        bits: code width, 2..8.
        clip_search: clipping-search grid of :func:`group_params` (0: min-max ranges).

    Returns:
        ``(q, scales, zeros)``: uint8 codes ``[out, in]``, fp16 scales and
        fp16 integer zero points ``[out, in // group_size]``.
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_rtn: expected a 2D [out, in] weight, got shape {tuple(w.shape)}")
    if not 2 <= bits <= 8:
        raise ValueError(f"quantize_rtn: bits={bits} must be in 2..8")
    out_features, in_features = w.shape
    check_group_size(in_features, group_size, "quantize_rtn")
    groups = w.detach().float().reshape(out_features * (in_features // group_size), group_size)  # [out*G, g]
    scale, zero = group_params(groups, bits, clip_search)  # [out*G]
    q = quantize_with_params(groups, scale, zero, bits)  # [out*G, g]
    n_groups = in_features // group_size
    return (q.to(torch.uint8).reshape(out_features, in_features),
            scale.reshape(out_features, n_groups), zero.reshape(out_features, n_groups))


def dequantize(q: Tensor, scales: Tensor, zeros: Tensor, group_size: int,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Weights ``(q - zero) * scale`` from unpacked codes.

    Args:
        q: uint8 codes ``[out, in]``.
        scales: ``[out, in // group_size]``.
        zeros: ``[out, in // group_size]``.
        group_size: columns per group.
        dtype: output dtype.

    Returns:
        ``[out, in]`` weight in ``dtype``.
    """
    out_features, in_features = q.shape
    n_groups = in_features // group_size
    if scales.shape != (out_features, n_groups) or zeros.shape != (out_features, n_groups):
        raise ValueError(f"dequantize: scales {tuple(scales.shape)} / zeros {tuple(zeros.shape)} do not match "
                         f"q {tuple(q.shape)} with group_size={group_size} (expected [{out_features}, {n_groups}])")
    codes = q.reshape(out_features, n_groups, group_size).to(dtype)  # [out, G, g]
    w = (codes - zeros.to(dtype)[..., None]) * scales.to(dtype)[..., None]  # [out, G, g]
    return w.reshape(out_features, in_features)
