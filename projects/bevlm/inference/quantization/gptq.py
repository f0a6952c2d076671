"""GPTQ: accurate post-training weight quantisation with second-order error feedback.

Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", arXiv 2210.17323. For one Linear with
calibration inputs X, minimise ``||W X^T - W_hat X^T||^2`` column by column:
quantise column j, then spread its error over the not-yet-quantised columns
using the inverse Hessian ``H^-1`` (``H = 2 X^T X``), in its upper Cholesky
form for numerical stability, with lazy block updates (Algorithm 1).

Group parameters (scale/zero of ``group_size`` columns) are computed from the
error-updated weights when the first column of a group is reached. With
``act_order`` columns are visited by decreasing Hessian diagonal and the group
parameters are computed up front from the original weights ("static groups"),
so the storage format (contiguous groups) does not change.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .int4 import check_group_size, dequant_codes, group_params, quantize_with_params


class HessianAccumulator:
    """Running ``H = 2 / n * sum_k x_k x_k^T`` over a layer's input rows.

    Register it as a forward pre-hook (:meth:`attach`) on an ``nn.Linear``;
    every forward adds the rows of its input ``[..., in]``.

    Args:
        in_features: the layer's input size.
    """

    def __init__(self, in_features: int) -> None:
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float32)
        self.num_rows = 0

    def add(self, x: Tensor) -> None:
        """Accumulate input rows ``x`` ``[..., in]``."""
        rows = x.detach().reshape(-1, x.shape[-1]).float().to(self.hessian.device)  # [n, in]
        n = rows.shape[0]
        if n == 0:
            return
        total = self.num_rows + n
        self.hessian.mul_(self.num_rows / total)
        rows = rows * math.sqrt(2.0 / total)
        self.hessian.addmm_(rows.t(), rows)  # [in, in]
        self.num_rows = total

    def attach(self, linear: nn.Linear):
        """Register the pre-hook on ``linear``; returns the removable handle."""
        if self.hessian.device != linear.weight.device:
            self.hessian = self.hessian.to(linear.weight.device)

        def hook(_module: nn.Module, inputs: tuple) -> None:
            self.add(inputs[0])

        return linear.register_forward_pre_hook(hook)


def _inverse_hessian_cholesky(hessian: Tensor, damping: float) -> Tensor:
    """Upper Cholesky factor of ``(H + damp I)^-1``, ``damp = damping * mean(diag H)``.

    The damping is raised tenfold (up to three times) if the factorisation fails.
    """
    damp = damping * float(torch.diag(hessian).mean())
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for _ in range(4):
        h = hessian + damp * eye
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0:
                return upper
        damp *= 10.0
    raise RuntimeError("GPTQ: the calibration Hessian is not positive definite even with 1000x damping; "
                       "use more (or more varied) calibration data")


@torch.no_grad()
def gptq_quantize(weight: Tensor, hessian: Tensor, bits: int = 4, group_size: int = 128, damping: float = 0.01,
                  block_size: int = 128, act_order: bool = False,
                  clip_search: int = 0, zero_point: str = "int") -> tuple[Tensor, Tensor, Tensor]:
    """Quantise one weight matrix with GPTQ.

    Args:
        weight: ``[out, in]`` float weight (not modified).
        hessian: ``[in, in]`` ``2 X^T X`` of the calibration inputs.
        bits: code width.
        group_size: input columns per scale/zero group (divides ``in``).
        damping: dampening as a fraction of the mean Hessian diagonal.
        block_size: columns per lazy-update block (rounded to whole groups).
        act_order: visit columns by decreasing ``diag(H)`` (static groups).
        clip_search: clipping-search grid of each group's range (see ``group_params``; 0: min-max).
        zero_point: ``'int'`` (integer zero points) or ``'offset'`` (fp16 group offsets, Q4_1).

    Returns:
        ``(q, scales, zeros)`` in the same format as
        :func:`bevlm.inference.quantization.int4.quantize_rtn`: uint8 codes
        ``[out, in]`` and fp16 ``[out, in // group_size]``.
    """
    out_features, in_features = weight.shape
    check_group_size(in_features, group_size, "gptq_quantize")
    if hessian.shape != (in_features, in_features):
        raise ValueError(f"gptq_quantize: Hessian shape {tuple(hessian.shape)} != [{in_features}, {in_features}]")
    w = weight.detach().float().clone()  # [out, in]
    h = hessian.detach().float().to(w.device).clone()  # [in, in]
    dead = torch.diag(h) == 0  # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    n_groups = in_features // group_size
    scales = torch.empty(out_features, n_groups, dtype=torch.float16, device=w.device)
    zeros = torch.empty_like(scales)

    perm = None
    if act_order:
        for g in range(n_groups):  # static groups from the original weights
            scales[:, g], zeros[:, g] = group_params(w[:, g * group_size:(g + 1) * group_size], bits, clip_search,
                                                     zero_point=zero_point)
        perm = torch.argsort(torch.diag(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
    group_of = (perm if perm is not None else torch.arange(in_features, device=w.device)) // group_size  # [in]

    hinv = _inverse_hessian_cholesky(h, damping)  # [in, in] upper
    # Blocks hold whole groups, so a group's parameters see all earlier errors.
    block_size = max(group_size, block_size // group_size * group_size)
    q = torch.zeros_like(w)
    for start in range(0, in_features, block_size):
        end = min(start + block_size, in_features)
        w_blk = w[:, start:end].clone()  # [out, b]
        q_blk = torch.zeros_like(w_blk)
        err_blk = torch.zeros_like(w_blk)
        hinv_blk = hinv[start:end, start:end]  # [b, b]
        for i in range(end - start):
            col = start + i
            if not act_order and col % group_size == 0:  # group params from the error-updated weights
                g = col // group_size
                scales[:, g], zeros[:, g] = group_params(w_blk[:, i:i + group_size], bits, clip_search,
                                                         zero_point=zero_point)
            g = int(group_of[col])
            column = w_blk[:, i]  # [out]
            codes = quantize_with_params(column[:, None], scales[:, g], zeros[:, g], bits, zero_point)[:, 0]  # [out]
            q_blk[:, i] = codes
            dq = dequant_codes(codes, scales[:, g].float(), zeros[:, g].float(), zero_point)  # [out]
            err = (column - dq) / hinv_blk[i, i]  # [out]
            w_blk[:, i:] -= err[:, None] * hinv_blk[i, i:][None, :]  # [out, b - i]
            err_blk[:, i] = err
        q[:, start:end] = q_blk
        w[:, end:] -= err_blk @ hinv[start:end, end:]  # lazy batch update [out, in - end]

    if perm is not None:
        q = q[:, torch.argsort(perm)]
    return q.to(torch.uint8), scales, zeros
