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


def group_params(w_group: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Asymmetric scale and integer zero point of each row of a weight group.

    The range is widened to include 0 (as in GPTQ), so the zero point is an
    integer in ``0 .. 2**bits - 1``. The scale is rounded UP to the next fp16
    value, so ``(2**bits - 1) * scale`` still covers the range after fp16
    storage and every element is within ``scale / 2`` of its dequantised value.

    Args:
        w_group: ``[out, g]`` float weights (any float dtype).
        bits: code width (2..8).

    Returns:
        ``(scale, zero)``: fp16 ``[out]`` each.
    """
    levels = (1 << bits) - 1
    w = w_group.float()
    w_min = w.amin(dim=1).clamp(max=0.0)  # [out]
    w_max = w.amax(dim=1).clamp(min=0.0)  # [out]
    if float(torch.maximum(w_max, -w_min).max()) > _FP16_MAX:
        raise ValueError("group_params: weights exceed the fp16 range; the fp16 scales cannot represent them")
    scale = ((w_max - w_min) / levels).clamp(min=_FP16_TINY)  # [out]
    scale16 = scale.to(torch.float16)
    up = torch.nextafter(scale16, torch.full_like(scale16, float("inf")))  # next fp16 value
    scale16 = torch.where(scale16.float() < scale, up, scale16)  # round up, never down
    zero = torch.round(-w_min / scale16.float()).clamp(0, levels)  # [out]
    return scale16, zero.to(torch.float16)


def quantize_with_params(w: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:
    """Integer codes of ``w`` ``[out, k]`` given per-row ``scale``/``zero`` ``[out]`` or ``[out, 1]``."""
    levels = (1 << bits) - 1
    s = scale.float().reshape(-1, 1)  # [out, 1]
    z = zero.float().reshape(-1, 1)
    return torch.clamp(torch.round(w.float() / s) + z, 0, levels)  # [out, k] float codes


def quantize_rtn(w: Tensor, group_size: int = 128, bits: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """Round-to-nearest group-wise asymmetric quantisation.

    Args:
        w: ``[out, in]`` float weight.
        group_size: consecutive input columns sharing one scale/zero.
        bits: code width, 2..8.

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
    scale, zero = group_params(groups, bits)  # [out*G]
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
