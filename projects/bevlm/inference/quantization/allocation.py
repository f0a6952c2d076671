"""Group sizes chosen per Linear by measured sensitivity, under a budget of stored bits.

A uniform rule (every Linear at groups of 32, or the MLP's gate / up at 64) spends the same bits on
every layer. Layers differ in how much int4 rounding hurts their outputs, so the same bytes can buy
less error when the finer groups go where they matter. Here each Linear's sensitivity is the
relative output error of its quantisation at each candidate group size on the calibration inputs,

    e(layer, g) = trace(dW H dW^T) / trace(W H W^T),   dW = Q_g(W) - W,

(``H`` the Hessian GPTQ accumulates, so the error is exact on the calibration rows; relative, so
layers of different output scales compare), and :func:`allocate_group_sizes` picks one group size
per layer so that the summed error is small and the average stored bits per weight stay within the
budget: it starts every layer at its coarsest group and repeatedly applies the refinement with the
largest error drop per added bit that still fits.

Stored bits per weight at group size ``g``: 4 bits of code plus an fp16 scale and an fp16 zero
(or offset) per ``g`` weights, ``4 + 32 / g`` (:func:`group_bits`); the bias and the AWQ input
scale (one float per input channel) are outside the budget, as they are outside the codes.
"""
from __future__ import annotations

from typing import Mapping

#: Bits of the int4 code of one weight.
CODE_BITS = 4
#: Bits stored per group besides the codes: an fp16 scale and an fp16 zero / offset.
GROUP_OVERHEAD_BITS = 32


def group_bits(group_size: int) -> float:
    """Stored bits per weight of int4 codes at ``group_size`` (codes + fp16 scale + fp16 zero)."""
    return CODE_BITS + GROUP_OVERHEAD_BITS / group_size


def allocate_group_sizes(errors: Mapping[str, Mapping[int, float]], numels: Mapping[str, int],
                         budget: float) -> dict[str, int]:
    """One group size per layer: low summed error at no more than ``budget`` bits per weight on average.

    Greedy on the error drop per added bit: every layer starts at its coarsest candidate; at each
    step, among all (layer, finer candidate) moves that keep the total within the budget, the one
    with the largest ``(e_now - e_new) / (added bits)`` is applied (ties: the first layer in
    ``errors`` order, then the coarser candidate); it stops when no move fits or none lowers the
    error.

    Args:
        errors: ``{layer: {group size: error}}``, at least one candidate per layer.
        numels: ``{layer: number of weights}``.
        budget: average stored bits per weight allowed over all layers (see :func:`group_bits`).

    Returns:
        ``{layer: group size}`` in ``errors`` order.

    Raises:
        ValueError: a layer has no candidate or no ``numels`` entry, or even the coarsest candidates
            exceed the budget (the message gives the feasible range).
    """
    names = list(errors)
    for name in names:
        if not errors[name]:
            raise ValueError(f"allocate_group_sizes: layer {name} has no candidate group size")
        if name not in numels:
            raise ValueError(f"allocate_group_sizes: no weight count for layer {name}")
    total = sum(numels[n] for n in names)
    choice = {n: max(errors[n]) for n in names}  # the coarsest group: the fewest bits
    used = sum(numels[n] * group_bits(choice[n]) for n in names)
    allowed = budget * total
    if used > allowed * (1 + 1e-12):
        finest = sum(numels[n] * group_bits(min(errors[n])) for n in names) / total
        raise ValueError(f"allocate_group_sizes: budget {budget:.4f} bits per weight is below the coarsest "
                         f"allocation ({used / total:.4f}); choose a budget in [{used / total:.4f}, {finest:.4f}]")
    while True:
        best = None  # (gain per bit, -index, -finer group size) ... maximised
        for i, n in enumerate(names):
            now = choice[n]
            for g in sorted(errors[n], reverse=True):
                if g >= now:
                    continue
                added = numels[n] * (group_bits(g) - group_bits(now))
                drop = errors[n][now] - errors[n][g]
                if drop <= 0 or used + added > allowed * (1 + 1e-12):
                    continue
                key = (drop / added, -i, g)
                if best is None or key > best[0]:
                    best = (key, n, g, added)
        if best is None:
            return choice
        _, n, g, added = best
        choice[n] = g
        used += added
