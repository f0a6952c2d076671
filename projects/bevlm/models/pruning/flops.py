"""FLOPs of the encoder phase and the prefill of a BEVVLM under pruning settings.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` through
:func:`bevlm.utils.count_flops` (exact and repeatable, unlike wall time on a shared machine).
The encoder phase is everything before the LLM (backbone, neck, BEV encoder, projector,
BEV-side pruning, ego / trajectory query embeddings); the prefill is the LLM pass over the prefix
(for FastV: the scoring pass plus the kept prefill, see :mod:`.fastv`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from bevlm.models.llm import HFCausalLM
from bevlm.utils import count_flops

from .fastv import fastv_prefill
from .setting import PruningSetting, frame_prefix, prefill_with_setting


@torch.no_grad()
def prefill_flops(llm: HFCausalLM, prefix_embeds: Tensor, visual_slice: tuple[int, int] | None = None,
                  keep_ratio: float = 1.0, layer: int = 2) -> int:
    """FLOPs of one frame's prefill, plain (``keep_ratio=1``) or FastV.

    Args:
        llm: the LLM wrapper.
        prefix_embeds: ``[1, P, D]``.
        visual_slice: ``(start, end)`` of the visual tokens (needed when ``keep_ratio < 1``).
        keep_ratio: FastV keep ratio.
        layer: FastV's K.

    Returns:
        total FLOPs of the prefill.
    """
    with count_flops(llm) as flops:
        if keep_ratio >= 1.0:
            llm.prefill(prefix_embeds)
        else:
            if visual_slice is None:
                raise ValueError("prefill_flops: keep_ratio < 1 needs visual_slice")
            fastv_prefill(llm, prefix_embeds, visual_slice, keep_ratio, layer)
    return flops["flops"]


@torch.no_grad()
def count_pruned_flops(model: nn.Module, imgs: Tensor, data_samples: list,
                       setting: PruningSetting) -> dict[str, int | float]:
    """Encoder and prefill FLOPs per frame of a BEVVLM batch under ``setting``.

    Args:
        model: :class:`bevlm.models.detectors.BEVVLM` (eval mode).
        imgs: ``[B, T, N, 3, H, W]`` (the last frame is encoded, without history).
        data_samples: the batch's data samples.
        setting: the pruning setting.

    Returns:
        dict ``encoder`` and ``prefill`` (FLOPs per frame), ``visual_tokens`` (after BEV-side
        pruning) and ``prefix_tokens`` (P, before FastV).
    """
    b = len(data_samples)
    with count_flops(model) as enc:
        prefix, visual_slice = frame_prefix(model, imgs, data_samples, setting)
    prefill_total = 0
    for i in range(b):
        with count_flops(model) as pre:
            prefill_with_setting(model.llm, prefix[i:i + 1], visual_slice, setting)
        prefill_total += pre["flops"]
    return dict(encoder=enc["flops"] / b, prefill=prefill_total / b,
                visual_tokens=visual_slice[1] - visual_slice[0], prefix_tokens=int(prefix.shape[1]))


def flops_table(model: nn.Module, imgs: Tensor, data_samples: list,
                settings: dict[str, PruningSetting]) -> list[dict]:
    """One row per named setting, with ratios against the first setting (the baseline).

    Args:
        model, imgs, data_samples: as in :func:`count_pruned_flops`.
        settings: ``{name: setting}``; the first entry is the baseline (e.g. ``PruningSetting()``).

    Returns:
        rows ``{name, encoder, prefill, visual_tokens, prefix_tokens, encoder_ratio, prefill_ratio}``.
    """
    rows = []
    for name, setting in settings.items():
        rows.append(dict(name=name, **count_pruned_flops(model, imgs, data_samples, setting)))
    base = rows[0]
    for row in rows:
        row["encoder_ratio"] = row["encoder"] / max(base["encoder"], 1)
        row["prefill_ratio"] = row["prefill"] / max(base["prefill"], 1)
    return rows
