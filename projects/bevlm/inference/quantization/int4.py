"""Group-wise asymmetric low-bit weight quantisation and 4-bit packing.

Round-to-nearest (RTN) weight-only quantisation with one fp16 scale and one
fp16 zero point per group of ``group_size`` consecutive input columns, the
storage format used by GPTQ (Frantar et al., 2022, arXiv 2210.17323) and AWQ
(Lin et al., 2023, arXiv 2306.00978)::

    w_hat[o, i] = (q[o, i] - zero[o, i // g]) * scale[o, i // g]

with ``q`` an integer in ``0 .. 2**bits - 1`` and ``zero`` an integer stored in
fp16 (exact). Two 4-bit codes share one byte (:func:`pack_int4`).

``zero_point="offset"`` stores a float offset (the group's minimum) instead of the integer
zero point, the layout of llama.cpp's ``Q4_1`` blocks::

    w_hat[o, i] = q[o, i] * scale[o, i // g] + offset[o, i // g]

The range is then not widened to include 0, and weights that already lie on such a grid (a
model shipped as ``Q4_1``, dequantised on load) are reproduced exactly at the source's group
size (32 for ``Q4_1``): re-quantising them with integer zero points at another group size
would round a second time.
"""
from __future__ import annotations

import torch
from torch import Tensor

_FP16_MAX = float(torch.finfo(torch.float16).max)
_FP16_TINY = float(torch.finfo(torch.float16).tiny)  # smallest normal fp16
#: Zero-point layouts: ``'int'`` ``(q - zero) * scale`` (GPTQ / AWQ), ``'offset'`` ``q * scale + offset`` (Q4_1).
ZERO_POINTS = ("int", "offset")


def check_zero_point(zero_point: str, where: str) -> None:
    """Raise a clear error unless ``zero_point`` is one of :data:`ZERO_POINTS`."""
    if zero_point not in ZERO_POINTS:
        raise ValueError(f"{where}: zero_point={zero_point!r} is not one of {ZERO_POINTS}")


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


def fp16_scale_round_up(scale: Tensor) -> Tensor:
    """``scale`` (float, clamped to the smallest normal fp16) as fp16, rounded UP, never down: a
    range that ``levels * scale`` covers is still covered after fp16 storage."""
    scale = scale.clamp(min=_FP16_TINY)
    scale16 = scale.to(torch.float16)
    up = torch.nextafter(scale16, torch.full_like(scale16, float("inf")))  # next fp16 value
    return torch.where(scale16.float() < scale, up, scale16)


def _minmax_params(w_min: Tensor, w_max: Tensor, levels: int,
                   zero_point: str = "int") -> tuple[Tensor, Tensor]:
    """fp16 scale (rounded up) and zero covering ``[w_min, w_max]``: for ``'int'`` a float integer
    zero (``w_min <= 0 <= w_max``), for ``'offset'`` ``w_min`` rounded to the nearest fp16."""
    scale16 = fp16_scale_round_up((w_max - w_min) / levels)  # [out]
    if zero_point == "offset":
        return scale16, w_min.to(torch.float16).float()
    zero = torch.round(-w_min / scale16.float()).clamp(0, levels)  # [out]
    return scale16, zero


def _row_sq_error(w: Tensor, scale16: Tensor, zero: Tensor, bits: int, zero_point: str = "int") -> Tensor:
    """Per-row squared error ``sum((w_hat - w)^2)`` of quantising ``w`` ``[out, g]`` with these params."""
    q = quantize_with_params(w, scale16, zero, bits, zero_point)
    return (dequant_codes(q, scale16.float()[:, None], zero.float()[:, None], zero_point) - w).pow(2).sum(dim=1)


def dequant_codes(codes: Tensor, scale: Tensor, zero: Tensor, zero_point: str) -> Tensor:
    """``(codes - zero) * scale`` (``'int'``) or ``codes * scale + zero`` (``'offset'``), broadcasting."""
    return codes * scale + zero if zero_point == "offset" else (codes - zero) * scale


def group_params(w_group: Tensor, bits: int, clip_search: int = 0,
                 max_shrink: float = 0.8, zero_point: str = "int") -> tuple[Tensor, Tensor]:
    """Asymmetric scale and zero point of each row of a weight group.

    ``zero_point='int'``: the range is widened to include 0 (as in GPTQ), so the zero point is an
    integer in ``0 .. 2**bits - 1``. The scale is rounded UP to the next fp16
    value, so ``(2**bits - 1) * scale`` still covers the range after fp16
    storage and every element is within ``scale / 2`` of its dequantised value.
    ``zero_point='offset'``: the range is the group's own ``[min, max]`` and the second
    tensor is the fp16 offset ``min`` (every element within ``scale / 2 + |offset - min|``).

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

        zero_point: ``'int'`` or ``'offset'`` (see the module docstring).

    Returns:
        ``(scale, zero)``: fp16 ``[out]`` each (``zero`` is the offset for ``'offset'``).
    """
    check_zero_point(zero_point, "group_params")
    levels = (1 << bits) - 1
    w = w_group.float()
    w_min, w_max = w.amin(dim=1), w.amax(dim=1)  # [out]
    if zero_point == "int":
        w_min, w_max = w_min.clamp(max=0.0), w_max.clamp(min=0.0)
    if float(torch.maximum(w_max.abs(), w_min.abs()).max()) > _FP16_MAX:
        raise ValueError("group_params: weights exceed the fp16 range; the fp16 scales cannot represent them")
    scale16, zero = _minmax_params(w_min, w_max, levels, zero_point)
    if clip_search > 0:
        best = _row_sq_error(w, scale16, zero, bits, zero_point)
        for i in range(1, int(max_shrink * clip_search) + 1):
            p = 1.0 - i / clip_search
            if zero_point == "int":  # shrink about 0 (the range contains it)
                lo, hi = w_min * p, w_max * p
            else:  # shrink about the group's midpoint
                mid, half = (w_max + w_min) / 2, (w_max - w_min) / 2
                lo, hi = mid - half * p, mid + half * p
            s, z = _minmax_params(lo, hi, levels, zero_point)
            err = _row_sq_error(w, s, z, bits, zero_point)
            better = err < best
            scale16, zero = torch.where(better, s, scale16), torch.where(better, z, zero)
            best = torch.where(better, err, best)
    return scale16, zero.to(torch.float16)


def quantize_with_params(w: Tensor, scale: Tensor, zero: Tensor, bits: int, zero_point: str = "int") -> Tensor:
    """Integer codes of ``w`` ``[out, k]`` given per-row ``scale``/``zero`` ``[out]`` or ``[out, 1]``
    (``zero`` is the offset for ``zero_point='offset'``)."""
    levels = (1 << bits) - 1
    s = scale.float().reshape(-1, 1)  # [out, 1]
    z = zero.float().reshape(-1, 1)
    if zero_point == "offset":
        return torch.clamp(torch.round((w.float() - z) / s), 0, levels)  # [out, k] float codes
    return torch.clamp(torch.round(w.float() / s) + z, 0, levels)  # [out, k] float codes


def quantize_rtn(w: Tensor, group_size: int = 128, bits: int = 4,
                 clip_search: int = 0, zero_point: str = "int") -> tuple[Tensor, Tensor, Tensor]:
    """Round-to-nearest group-wise asymmetric quantisation.

    Args:
        w: ``[out, in]`` float weight.
        group_size: consecutive input columns sharing one scale/zero.
        bits: code width, 2..8.
        clip_search: clipping-search grid of :func:`group_params` (0: min-max ranges).
        zero_point: ``'int'`` (integer zero points) or ``'offset'`` (fp16 group offsets, Q4_1).

    Returns:
        ``(q, scales, zeros)``: uint8 codes ``[out, in]``, fp16 scales and
        fp16 zero points (integers, or offsets) ``[out, in // group_size]``.
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_rtn: expected a 2D [out, in] weight, got shape {tuple(w.shape)}")
    if not 2 <= bits <= 8:
        raise ValueError(f"quantize_rtn: bits={bits} must be in 2..8")
    out_features, in_features = w.shape
    check_group_size(in_features, group_size, "quantize_rtn")
    groups = w.detach().float().reshape(out_features * (in_features // group_size), group_size)  # [out*G, g]
    scale, zero = group_params(groups, bits, clip_search, zero_point=zero_point)  # [out*G]
    q = quantize_with_params(groups, scale, zero, bits, zero_point)  # [out*G, g]
    n_groups = in_features // group_size
    return (q.to(torch.uint8).reshape(out_features, in_features),
            scale.reshape(out_features, n_groups), zero.reshape(out_features, n_groups))


def dequantize(q: Tensor, scales: Tensor, zeros: Tensor, group_size: int,
               dtype: torch.dtype = torch.float32, zero_point: str = "int") -> Tensor:
    """Weights ``(q - zero) * scale`` (or ``q * scale + offset``) from unpacked codes.

    Args:
        q: uint8 codes ``[out, in]``.
        scales: ``[out, in // group_size]``.
        zeros: ``[out, in // group_size]``.
        group_size: columns per group.
        dtype: output dtype.
        zero_point: ``'int'`` or ``'offset'`` (how ``zeros`` is read).

    Returns:
        ``[out, in]`` weight in ``dtype``.
    """
    check_zero_point(zero_point, "dequantize")
    out_features, in_features = q.shape
    n_groups = in_features // group_size
    if scales.shape != (out_features, n_groups) or zeros.shape != (out_features, n_groups):
        raise ValueError(f"dequantize: scales {tuple(scales.shape)} / zeros {tuple(zeros.shape)} do not match "
                         f"q {tuple(q.shape)} with group_size={group_size} (expected [{out_features}, {n_groups}])")
    codes = q.reshape(out_features, n_groups, group_size).to(dtype)  # [out, G, g]
    w = dequant_codes(codes, scales.to(dtype)[..., None], zeros.to(dtype)[..., None], zero_point)  # [out, G, g]
    return w.reshape(out_features, in_features)
