"""Compute kernels for 4-bit group-quantised linears and the run-time choice.

Two ways to compute ``y = x @ W_hat^T`` from the packed codes:

* ``'dequant'``: unpack and dequantise ``W_hat`` to the input dtype once per
  forward, then a dense ``F.linear``. Correct on every device and dtype. Without
  autograd (inference) the float weight is written into one shared, reused
  workspace (:func:`workspace`, at most :data:`WORKSPACE_ELEMENTS` elements per
  dtype; larger weights go through it in row blocks), so no layer keeps or
  re-allocates a float copy: the resident weights stay the packed codes plus one
  small buffer. With autograd (QLoRA-style training through the codes) each call
  builds its own weight, as the backward needs it.
* ``'native'``: PyTorch's CPU int4 matmul ``aten._weight_int4pack_mm_for_cpu``
  (the tinygemm layout of torchao: ``w = (q - 8) * scale + zero_f`` with a
  float-domain zero). Its speed depends on the CPU (much slower than fp32
  without AVX-512, competitive with it on AVX-512 parts), so it is only used
  when it exists, reproduces ``'dequant'`` within tolerance, and, for
  ``'auto'``, wins a tiny one-time micro-benchmark.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .int4 import dequantize, unpack_int4

#: Group sizes the native int4pack kernel supports.
NATIVE_GROUP_SIZES = (32, 64, 128, 256)
#: Rows above which a forward counts as "prefill" (else "decode") for the kernel choice.
DECODE_MAX_ROWS = 4
_INNER_K_TILES = 8
_AUTO_CACHE: dict[tuple, dict[str, str]] = {}
#: Largest float weight block (elements) the dequant workspace holds per dtype and device: 2**20
#: (4 MiB in fp32) covers every linear of a ~135M-parameter LLM in one block; larger layers
#: (a tied LM head over the vocabulary) are computed in row blocks of this size.
WORKSPACE_ELEMENTS = 1 << 20
_WORKSPACE: dict[tuple, Tensor] = {}


def workspace(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A flat ``[numel]`` view of the shared scratch buffer for ``(dtype, device)``.

    The buffer grows to the largest request and is reused by every later call, so its
    contents are only valid until the next call for the same dtype and device (callers
    consume the block before asking again; not for use under autograd).
    """
    key = (dtype, torch.device(device))
    buf = _WORKSPACE.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype, device=device)
        _WORKSPACE[key] = buf
    return buf[:numel]


def workspace_bytes() -> int:
    """Bytes held by the dequant workspaces (resident while the model runs)."""
    return sum(t.numel() * t.element_size() for t in _WORKSPACE.values())


def clear_workspace() -> None:
    """Free the dequant workspaces (they are rebuilt on the next call)."""
    _WORKSPACE.clear()


def _block_rows(out_features: int, in_features: int) -> int:
    return max(1, min(out_features, WORKSPACE_ELEMENTS // max(1, in_features)))


def blocked_linear(x: Tensor, out_features: int, bias: Tensor | None,
                   fill: Callable[[int, int, Tensor], None]) -> Tensor:
    """``x @ W^T (+ bias)`` where ``fill(r0, r1, block)`` writes rows ``r0:r1`` of ``W`` (in
    ``x.dtype``) into ``block`` ``[r1 - r0, in]``, a view of the shared workspace.

    One block when the weight fits the workspace (then exactly ``F.linear``), else row blocks of
    :data:`WORKSPACE_ELEMENTS` elements written into slices of the output.
    """
    in_features = x.shape[-1]
    rows = _block_rows(out_features, in_features)
    bias = None if bias is None else bias.to(x.dtype)
    if rows >= out_features:
        block = workspace(out_features * in_features, x.dtype, x.device).view(out_features, in_features)
        fill(0, out_features, block)
        return F.linear(x, block, bias)
    x2 = x.reshape(-1, in_features)  # [M, in]
    y = x2.new_empty(x2.shape[0], out_features)  # [M, out]
    for r0 in range(0, out_features, rows):
        r1 = min(out_features, r0 + rows)
        block = workspace((r1 - r0) * in_features, x.dtype, x.device).view(r1 - r0, in_features)
        fill(r0, r1, block)
        y[:, r0:r1] = F.linear(x2, block, None if bias is None else bias[r0:r1])
    return y.reshape(*x.shape[:-1], out_features)


def dequant_int4_into(qweight: Tensor, scales: Tensor, zeros: Tensor, group_size: int, zero_point: str,
                      out: Tensor) -> None:
    """Write ``dequantize(unpack_int4(qweight), scales, zeros)`` into ``out`` ``[rows, in]`` in place
    (the same operations in the same dtype, so the same numbers as :func:`.int4.dequantize`).

    Args:
        qweight: packed uint8 ``[rows, in // 2]``; ``scales`` / ``zeros``: ``[rows, in // group_size]``.
    """
    rows, half = qweight.shape
    codes = workspace(rows * half, torch.uint8, qweight.device).view(rows, half)  # [rows, in // 2]
    pairs = out.view(rows, half, 2)
    torch.bitwise_and(qweight, 0x0F, out=codes)
    pairs[..., 0].copy_(codes)
    torch.bitwise_right_shift(qweight, 4, out=codes)
    pairs[..., 1].copy_(codes)
    w = out.view(rows, half * 2 // group_size, group_size)  # [rows, G, g]
    scale, zero = scales.to(out.dtype)[..., None], zeros.to(out.dtype)[..., None]
    if zero_point == "offset":
        w.mul_(scale).add_(zero)
    else:
        w.sub_(zero).mul_(scale)


def _needs_own_weight(x: Tensor) -> bool:
    """Autograd would save the weight for the backward: the shared workspace cannot serve it."""
    return torch.is_grad_enabled() and x.requires_grad


def native_int4_available(device: torch.device, group_size: int, in_features: int) -> bool:
    """Whether the CPU int4pack kernel exists and accepts this layer shape."""
    ops = torch.ops.aten
    return (device.type == "cpu" and hasattr(ops, "_weight_int4pack_mm_for_cpu")
            and hasattr(ops, "_convert_weight_to_int4pack_for_cpu")
            and group_size in NATIVE_GROUP_SIZES and in_features % group_size == 0)


def dequant_linear(x: Tensor, qweight: Tensor, scales: Tensor, zeros: Tensor, bias: Tensor | None,
                   group_size: int, zero_point: str = "int") -> Tensor:
    """``F.linear`` with the weight dequantised to ``x.dtype`` for this call only (into the shared
    workspace unless autograd needs the weight)."""
    if not _needs_own_weight(x):
        def fill(r0: int, r1: int, block: Tensor) -> None:
            dequant_int4_into(qweight[r0:r1], scales[r0:r1], zeros[r0:r1], group_size, zero_point, block)
        return blocked_linear(x, qweight.shape[0], bias, fill)
    w = dequantize(unpack_int4(qweight), scales, zeros, group_size, dtype=x.dtype, zero_point=zero_point)  # [out, in]
    return F.linear(x, w, None if bias is None else bias.to(x.dtype))


def pack_native(qweight: Tensor, scales: Tensor, zeros: Tensor, dtype: torch.dtype,
                zero_point: str = "int") -> tuple[Tensor, Tensor]:
    """Repack codes and group parameters for ``_weight_int4pack_mm_for_cpu``.

    Our form ``(q - z) * s`` equals the kernel's ``(q - 8) * s + zf`` with
    ``zf = (8 - z) * s``; the offset form ``q * s + m`` has ``zf = m + 8 * s``.

    Args:
        qweight: packed uint8 ``[out, in // 2]``.
        scales: fp16 ``[out, G]``.
        zeros: fp16 ``[out, G]`` (integer zero points, or offsets for ``zero_point='offset'``).
        dtype: activation dtype the kernel will see.
        zero_point: ``'int'`` or ``'offset'``.

    Returns:
        ``(packed_weight, scale_and_zero [G, out, 2])``.
    """
    codes = unpack_int4(qweight).to(torch.int32)  # [out, in]
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, _INNER_K_TILES)
    s = scales.float()
    zf = zeros.float() + 8.0 * s if zero_point == "offset" else (8.0 - zeros.float()) * s  # [out, G]
    scale_and_zero = torch.stack([s.t(), zf.t()], dim=-1).to(dtype).contiguous()  # [G, out, 2]
    return packed, scale_and_zero


def native_linear(x: Tensor, packed: Tensor, scale_and_zero: Tensor, bias: Tensor | None, group_size: int,
                  out_features: int) -> Tensor:
    """``x @ W_hat^T (+ bias)`` with the native CPU int4 kernel."""
    rows = x.reshape(-1, x.shape[-1])  # [M, in]
    if not rows.is_contiguous():
        rows = rows.contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, group_size, scale_and_zero)  # [M, out]
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], out_features)


def native_matches(reference: Callable[[Tensor], Tensor], native: Callable[[Tensor], Tensor], in_features: int,
                   dtype: torch.dtype) -> bool:
    """Check the native kernel against the dequant kernel on fixed random rows.

    Tolerance: ``max|diff| <= rtol * max|ref| + 1e-5`` with ``rtol`` 1e-4 in
    fp32 and 2e-2 in half precision. A kernel that raises counts as a mismatch.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, in_features, generator=gen).to(dtype)  # [3, in]
    try:
        ref, got = reference(x).float(), native(x).float()
    except RuntimeError:
        return False
    rtol = 1e-4 if dtype == torch.float32 else 2e-2
    return bool(torch.isfinite(got).all()) and float((got - ref).abs().max()) <= rtol * float(ref.abs().max()) + 1e-5


def _seconds_per_call(fn: Callable[[Tensor], Tensor], x: Tensor, repeats: int = 3, rounds: int = 3) -> float:
    """Best-of-``rounds`` mean time of ``fn(x)`` over ``repeats`` calls (after one warm-up)."""
    with torch.no_grad():
        fn(x)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                fn(x)
            best = min(best, (time.perf_counter() - start) / repeats)
    return best


def choose_kernels(key: tuple, candidates: dict[str, Callable[[Tensor], Tensor]], in_features: int,
                   dtype: torch.dtype) -> dict[str, str]:
    """Fastest candidate for a decode-sized (1 row) and a prefill-sized (64 rows) input.

    The decision is cached per ``key`` (layer shape, dtype, device), so layers
    of the same shape benchmark once per process.

    Returns:
        ``{'decode': name, 'prefill': name}``.
    """
    if key in _AUTO_CACHE:
        return _AUTO_CACHE[key]
    choice = {}
    for regime, rows in (("decode", 1), ("prefill", 64)):
        x = torch.randn(rows, in_features).to(dtype)  # [rows, in]
        timings = {name: _seconds_per_call(fn, x) for name, fn in candidates.items()}
        choice[regime] = min(timings, key=timings.get)
    _AUTO_CACHE[key] = choice
    return choice


def clear_kernel_cache() -> None:
    """Forget the cached ``'auto'`` decisions (e.g. after changing thread count)."""
    _AUTO_CACHE.clear()
